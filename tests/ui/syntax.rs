snn::snn! {
    model bad {
        T = 4
        input x: [3]
        h = dense(x 2)
        output counts(h)
    }
}

fn main() {}
