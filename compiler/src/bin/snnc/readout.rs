//! `snnc readout`: a linear classifier on the features `snnc features` exported
//! ([`snnc::readout`]: the project's own trainer on a generated `dense` model).

use std::path::Path;

use snnc::diag::DResult;
use snnc::readout::{self, ReadoutOptions};

pub fn readout(dir: &Path, o: &ReadoutOptions, quiet: bool) -> DResult<()> {
    let (train, test) = readout::load_dir(dir)?;
    eprintln!(
        "readout: {} train / {} test samples of {} features, {} epochs, batch {}, {} lr {:e}{}",
        train.len(),
        test.len(),
        train.features(),
        o.epochs,
        o.batch,
        o.optimizer.name(),
        o.lr,
        if o.standardize { ", standardised" } else { "" }
    );
    let r = readout::train(&train, &test, o, |epoch, loss, acc| {
        if !quiet {
            eprintln!(
                "epoch {:>3}/{}  loss {loss:.4}  acc {:.2}%",
                epoch + 1,
                o.epochs,
                100.0 * acc
            );
        }
    })?;
    say!(
        "readout: train accuracy {:.2}%, test accuracy {:.2}% ({} classes, {} features, loss {:.4}, {:.1} s)",
        100.0 * r.train_accuracy,
        100.0 * r.test_accuracy,
        r.classes,
        r.features,
        r.loss,
        r.seconds
    );
    Ok(())
}
