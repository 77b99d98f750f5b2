snn::snn! {
    model bad {
        T = 4
        input x: [3]
        h = dense(y, 2)
        s = LIF(h)
        output counts(s)
    }
}

fn main() {}
