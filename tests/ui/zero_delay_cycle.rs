snn::snn! {
    model bad {
        T = 4
        input x: [3]
        f = dense(x, 2)
        r = dense(s, 2)
        s = LIF(f + r)
        output counts(s)
    }
}

fn main() {}
