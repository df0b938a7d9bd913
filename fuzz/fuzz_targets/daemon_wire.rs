//! Feeds arbitrary bytes, as a broken or hostile peer on a daemon group's socket could send them, to the
//! daemon wire's decoders (the module is the Apache module's own file, compiled in here: that crate is a
//! cdylib a fuzzer cannot link). Invariants: nothing panics or allocates past the frame limit; a frame
//! read is written back as the same bytes; a request or head payload that decodes encodes to exactly the
//! payload it came from (so nothing is dropped, reordered or invented).
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/httpd/src/daemon/wire.rs"]
mod wire;

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let mut input = Cursor::new(payload);
            while let Ok(Some((kind, frame))) = wire::read_frame(&mut input) {
                assert!(frame.len() <= wire::MAX_FRAME);
                let end = input.position() as usize;
                let mut again = Vec::new();
                wire::write_frame(&mut again, kind, &frame).unwrap();
                assert_eq!(again, payload[end - again.len()..end]);
            }
        }
        1 => {
            if let Ok(vars) = wire::decode_request(payload) {
                assert_eq!(wire::encode_request(&vars), payload);
            }
        }
        _ => {
            if let Ok(head) = wire::decode_head(payload) {
                assert_eq!(wire::encode_head(&head), payload);
            }
        }
    }
});
