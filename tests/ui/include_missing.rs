snn::include_snn!("models/missing.snn");
snn::include_snn!(models);

fn main() {}
