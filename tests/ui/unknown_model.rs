snn::snn! {
    model bad {
        T = 4
        input x: [3]
        h = dense(x, 2)
        s = LIFF(h, tau = 2.0)
        output counts(s)
    }
}

fn main() {}
