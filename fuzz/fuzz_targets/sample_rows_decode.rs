//! Fuzzes the sample rows one rank of the retraining stage sends another (its held-out rows,
//! as an Arrow IPC sample file): any bytes decode to rows that fit their fields, or to an
//! error; rows that decode encode again to the same rows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_samples::{decode_rows, encode_rows};

fuzz_target!(|data: &[u8]| {
    if let Ok((fields, rows)) = decode_rows(data) {
        for i in 0..rows.len() {
            let (features, ids, _) = rows.entries(i);
            for (&f, &id) in features.iter().zip(ids) {
                assert!(fields.slot(f, id).is_some(), "an entry outside its field");
            }
        }
        let again = encode_rows(&fields, &rows).expect("decoded rows encode");
        assert_eq!(decode_rows(&again).expect("and decode").1, rows);
    }
});
