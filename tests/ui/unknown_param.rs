snn::snn! {
    model bad {
        T = 4
        input x: [3]
        s = LIF(dense(x, 2), tua = 2.0)
        output counts(s)
    }
}

fn main() {}
