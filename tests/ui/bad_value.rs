snn::snn! {
    model bad {
        T = 4
        input x: [3]
        s = LIF(x, tau = -1.0)
        output counts(s)
    }
}

fn main() {}
