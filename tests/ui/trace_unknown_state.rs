snn::snn! {
    model bad {
        T = 4
        input x: [3]
        s = LIF(dense(x, 2))
        output trace(s.u)
    }
}

fn main() {}
