//! The only bytes of an S3 answer cairn reads itself rather than through
//! opendal: the XML error body of an upload refused over its checksum
//! (`cairn::backend::http::xml_field`, `checksum_error`) and of a bucket
//! that could not be created (`cairn::backend::s3::s3_code`). The input is
//! taken as the body (lossily as UTF-8, as `Response::text` does), and
//! also split into a code and a message wrapped in an error body.
//!
//! Asserted: a field is found only as the text between its tags; a body
//! holding `<Code>c</Code>` gives `c`; an answer is temporary exactly when
//! its code says the bytes changed on the way, and otherwise says the
//! checksum header was refused.
#![no_main]

use cairn::backend::http::{checksum_error, xml_field, REFUSED};
use cairn::backend::s3::s3_code;
use libfuzzer_sys::fuzz_target;

const DAMAGED: [&str; 2] = ["BadDigest", "XAmzContentChecksumMismatch"];

/// Checks what the parsers make of `body`.
fn exercise(body: &str, status: u16) {
    let code = xml_field(body, "Code");
    let message = xml_field(body, "Message");
    for (tag, field) in [("Code", code), ("Message", message)] {
        if !field.is_empty() {
            // The trimmed text right after the first opening tag.
            let open = format!("<{tag}>");
            let after = &body[body.find(&open).expect("a field has its tag") + open.len()..];
            assert!(after.trim_start().starts_with(field));
            assert!(after.contains(&format!("</{tag}>")));
            assert!(!field.contains(&format!("</{tag}>")));
        }
    }
    assert_eq!(s3_code(body).trim(), code);

    let e = checksum_error(status, body);
    let text = e.to_string();
    if DAMAGED.contains(&code) {
        assert!(e.is_temporary(), "{text}");
    } else {
        assert!(!e.is_temporary(), "{text}");
        assert_eq!(format!("{:?}", e.kind()), "Unsupported");
        assert!(text.contains(REFUSED), "{text}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let status = if flags & 1 == 0 { 400 } else { 501 };
    let text = String::from_utf8_lossy(rest);
    exercise(&text, status);

    // A well-formed error body around the input's code and message.
    let at = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(usize::from(flags >> 1))
        .unwrap_or(text.len());
    let (code, message) = text.split_at(at);
    // The known codes, so that the temporary path is reached.
    let code = match flags >> 6 {
        1 => "BadDigest",
        2 => "XAmzContentChecksumMismatch",
        _ => code,
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>1</RequestId></Error>"
    );
    exercise(&body, status);
    if !code.contains("<Code>") && !code.contains("</Code>") {
        assert_eq!(s3_code(&body), code);
        assert_eq!(xml_field(&body, "Code"), code.trim());
    }
});
