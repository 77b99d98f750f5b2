snn::snn! {
    model bad {
        T = 4
        input x: [3]
        a = dense(x, 2)
        b = dense(x, 5)
        s = LIF(a + b)
        output counts(s)
    }
}

fn main() {}
