//! Incomplete multipart uploads: finding and aborting them for gc.
//!
//! A pack (or index table) over [`super::MULTIPART_THRESHOLD`] is uploaded
//! in parts, and becomes an object only when the upload is completed. A
//! backup killed in between leaves an *incomplete upload*: no object, no
//! listing of objects shows it, yet the store keeps its parts, and bills
//! for them, until the upload is aborted. gc aborts them (see
//! [`crate::gc::remove_leftovers`]): only writers holding a lock start
//! uploads, and gc holds the exclusive one.
//!
//! Which uploads: those whose keys lie in the repository, where the
//! repository puts files: in its own folders (`PREFIX/keys/`,
//! `PREFIX/packs/`, `PREFIX/index/`, `PREFIX/snapshots/`,
//! `PREFIX/locks/`, each listed with its slash), and there only at the
//! place the key's last part names (`PREFIX/packs/ab/abcd…`), as the
//! listings of objects have it. So a repository at `bucket/repo` never
//! touches `bucket/repo2/…`, nor one nested at `bucket/repo/sub` (which
//! `init` accepts), nor, at the bucket's root, another application's
//! uploads. Each key a listing returns is checked that way too, so a
//! store that ignored the prefix could not make gc abort another's
//! upload.
//!
//! opendal's S3 service aborts only an upload it is running itself, so
//! `ListMultipartUploads`, `ListParts` (for the bytes an upload holds) and
//! `AbortMultipartUpload` are signed with `rusty-s3` (presigned URLs) and
//! sent as the bucket creation is (see [`S3Backend::send_signed`]); their
//! answers are read with `quick-xml`, which opendal reads S3's with. A
//! store that does not
//! offer them (`501 NotImplemented`), or credentials without the
//! permission (`403`), make a warning, not an error: gc has done its work,
//! and such uploads stay until a lifecycle rule removes them, as before.

use std::time::Duration;

use rusty_s3::S3Action;
use serde::Deserialize;

use super::{s3_code, S3Backend};
use crate::backend::{Backend, FileKind, Leftovers};
use crate::error::Error;
use crate::id::is_hex_name;

/// The kinds of file whose folders hold the repository's uploads (a
/// config is never uploaded in parts).
const UPLOAD_KINDS: [FileKind; 5] = [
    FileKind::Key,
    FileKind::Pack,
    FileKind::Index,
    FileKind::Snapshot,
    FileKind::Lock,
];

/// How long a signed URL stays valid: far longer than any one request.
const SIGNED_FOR: Duration = Duration::from_secs(300);

/// An incomplete upload: its key in the bucket and its id.
#[derive(Debug, PartialEq)]
struct Upload {
    key: String,
    id: String,
}

/// Why a request about uploads did not do what it asked.
enum Failure {
    /// The upload is gone (completed or aborted meanwhile).
    Gone,
    /// The store does not offer the request, or the credentials do not
    /// allow it: the reason, for a warning.
    Refused(String),
    /// Anything else: an error.
    Failed(Error),
}

impl S3Backend {
    /// Aborts the incomplete multipart uploads in the repository, or for a
    /// `dry_run` only finds them. See the module docs.
    pub(super) fn remove_uploads(&self, dry_run: bool) -> crate::error::Result<Leftovers> {
        let mut found = Leftovers::default();
        let Some((bucket, creds)) = self.signer()? else {
            return Ok(found);
        };
        let mut uploads = Vec::new();
        for kind in UPLOAD_KINDS {
            let prefix = match self.opts.prefix.as_str() {
                "" => format!("{}/", kind.dir()),
                repo => format!("{repo}/{}/", kind.dir()),
            };
            match self.list_uploads(&bucket, &creds, &prefix) {
                Ok(some) => uploads.extend(some.into_iter().filter(|up| self.is_ours(kind, up))),
                Err(Failure::Refused(why)) => {
                    found.warnings.push(format!(
                        "{}: incomplete multipart uploads not listed: {why}; the parts of \
                         interrupted uploads stay until a lifecycle rule \
                         (AbortIncompleteMultipartUpload) removes them",
                        self.location()
                    ));
                    return Ok(found);
                }
                Err(Failure::Gone) => {}
                Err(Failure::Failed(e)) => return Err(e),
            }
        }
        let mut bytes = Some(0u64);
        let mut refused = None;
        for up in &uploads {
            match self.upload_size(&bucket, &creds, up) {
                Ok(n) => bytes = bytes.map(|b| b + n),
                Err(Failure::Gone) => continue,
                // Only for the report: not worth failing gc over.
                Err(_) => bytes = None,
            }
            if !dry_run {
                if refused.is_some() {
                    continue;
                }
                let url = rusty_s3::actions::AbortMultipartUpload::new(
                    &bucket,
                    Some(&creds),
                    &up.key,
                    &up.id,
                )
                .sign(SIGNED_FOR);
                let answer = self.send_signed(reqwest::Method::DELETE, &url, String::new());
                match self.answer(
                    "abort upload of",
                    &up.key,
                    answer,
                    "s3:AbortMultipartUpload",
                ) {
                    Ok(_) => {}
                    Err(Failure::Gone) => continue,
                    Err(Failure::Refused(why)) => {
                        refused = Some(why);
                        continue;
                    }
                    Err(Failure::Failed(e)) => return Err(e),
                }
            }
            found.uploads += 1;
        }
        if let Some(why) = refused {
            let left = uploads.len() as u64 - found.uploads;
            found.warnings.push(format!(
                "{}: {left} incomplete multipart uploads not aborted: {why}; their parts \
                 stay until a lifecycle rule (AbortIncompleteMultipartUpload) removes them",
                self.location()
            ));
        }
        found.upload_bytes = bytes;
        Ok(found)
    }

    /// Whether `up`, listed under the folder of `kind`, is an upload of
    /// this repository's: its key is where the name it ends with would be
    /// put (`PREFIX/packs/ab/abcd…`, `PREFIX/index/abcd…`), the rule the
    /// listings of objects follow. An upload deeper down (another
    /// repository nested under the prefix, at `PREFIX/sub` or
    /// `PREFIX/packs/sub`) or in another pack folder is not gc's to
    /// abort.
    fn is_ours(&self, kind: FileKind, up: &Upload) -> bool {
        let name = up.key.rsplit('/').next().unwrap_or_default();
        is_hex_name(name) && up.key == self.full_key(kind, name)
    }

    /// Every incomplete upload whose key starts with `prefix`, page by
    /// page (`key-marker`, `upload-id-marker`, while `IsTruncated`).
    fn list_uploads(
        &self,
        bucket: &rusty_s3::Bucket,
        creds: &rusty_s3::Credentials,
        prefix: &str,
    ) -> Result<Vec<Upload>, Failure> {
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            // A GET of the object with the empty key is a GET of the
            // bucket itself (the URL a listing of objects has); with
            // `uploads` in its query, the listing of uploads. rusty-s3
            // has no action of its own for it (nor, without the XML
            // parsing cairn does not need, for listing parts).
            let mut action = rusty_s3::actions::GetObject::new(bucket, Some(creds), "");
            let query = action.query_mut();
            query.insert("uploads", "");
            query.insert("prefix", prefix.to_string());
            if let Some((key, id)) = &marker {
                query.insert("key-marker", key.clone());
                query.insert("upload-id-marker", id.clone());
            }
            let url = action.sign(SIGNED_FOR);
            let answer = self.send_signed(reqwest::Method::GET, &url, String::new());
            let what = format!("{prefix}*");
            let body = self.answer(
                "list multipart uploads",
                &what,
                answer,
                "s3:ListBucketMultipartUploads",
            )?;
            let page = parse_uploads(&body)
                .map_err(|e| self.unreadable("list multipart uploads", &what, e))?;
            let last = page.uploads.last().map(|u| (u.key.clone(), u.id.clone()));
            out.extend(
                page.uploads
                    .into_iter()
                    .filter(|u| u.key.starts_with(prefix) && !u.id.is_empty()),
            );
            if !page.truncated {
                return Ok(out);
            }
            let next = page.next.or(last);
            if next.is_none() || next == marker {
                return Err(Failure::Failed(
                    self.upload_error(
                        "list multipart uploads",
                        &what,
                        "the store said the listing goes on but gave no place to go on from"
                            .to_string(),
                        false,
                    ),
                ));
            }
            marker = next;
        }
    }

    /// The bytes an upload's parts hold (`ListParts`, page by page).
    fn upload_size(
        &self,
        bucket: &rusty_s3::Bucket,
        creds: &rusty_s3::Credentials,
        up: &Upload,
    ) -> Result<u64, Failure> {
        let mut total = 0;
        let mut marker: Option<String> = None;
        loop {
            let mut action = rusty_s3::actions::GetObject::new(bucket, Some(creds), &up.key);
            action.query_mut().insert("uploadId", up.id.as_str());
            if let Some(m) = &marker {
                action.query_mut().insert("part-number-marker", m.clone());
            }
            let url = action.sign(SIGNED_FOR);
            let answer = self.send_signed(reqwest::Method::GET, &url, String::new());
            let body = self.answer(
                "list the parts of",
                &up.key,
                answer,
                "s3:ListMultipartUploadParts",
            )?;
            let page: PartsXml = quick_xml::de::from_str(&body)
                .map_err(|e| self.unreadable("list the parts of", &up.key, e))?;
            total += page.parts.iter().map(|p| p.size).sum::<u64>();
            if !page.is_truncated {
                return Ok(total);
            }
            let next = page.next_part_number_marker.filter(|m| !m.is_empty());
            if next.is_none() || next == marker {
                return Err(Failure::Failed(
                    self.upload_error(
                        "list the parts of",
                        &up.key,
                        "the store said the listing goes on but gave no place to go on from"
                            .to_string(),
                        false,
                    ),
                ));
            }
            marker = next;
        }
    }

    /// The body of a successful answer, or what went wrong: `permission` is
    /// the one a 403 means the credentials lack.
    fn answer(
        &self,
        op: &str,
        key: &str,
        answer: std::result::Result<(u16, String), String>,
        permission: &str,
    ) -> Result<String, Failure> {
        let (status, body) = match answer {
            Ok(a) => a,
            Err(detail) => return Err(Failure::Failed(self.upload_error(op, key, detail, true))),
        };
        let code = s3_code(&body);
        match (status, code.as_str()) {
            (200..=299, _) => Ok(body),
            (404, "NoSuchUpload") => Err(Failure::Gone),
            (501, _) | (_, "NotImplemented") => Err(Failure::Refused(format!(
                "the store does not offer it (HTTP {status} {code})"
            ))),
            (403, _) => Err(Failure::Refused(format!(
                "access denied (the credentials need the {permission} permission)"
            ))),
            (404, "NoSuchBucket") => Err(Failure::Failed(self.upload_error(
                op,
                key,
                format!("bucket {} does not exist", self.opts.bucket),
                false,
            ))),
            _ => Err(Failure::Failed(self.upload_error(
                op,
                key,
                format!("HTTP {status} {code}"),
                status >= 500 || status == 429,
            ))),
        }
    }

    /// An answer that is not the XML the request gives.
    fn unreadable(&self, op: &str, key: &str, e: impl std::fmt::Display) -> Failure {
        Failure::Failed(self.upload_error(op, key, format!("unreadable answer: {e}"), false))
    }

    fn upload_error(&self, op: &str, key: &str, detail: String, transient: bool) -> Error {
        Error::Backend {
            op: op.into(),
            object: format!("s3://{}/{key}", self.opts.bucket),
            endpoint: self.endpoint.clone(),
            detail: self.redact(&detail),
            transient,
        }
    }
}

/// One page of a `ListMultipartUploads` answer.
#[derive(Debug, PartialEq)]
struct Page {
    uploads: Vec<Upload>,
    /// `IsTruncated`: more pages follow.
    truncated: bool,
    /// `NextKeyMarker` and `NextUploadIdMarker`, where given.
    next: Option<(String, String)>,
}

/// A `ListMultipartUploadsResult`, as far as gc reads it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UploadsXml {
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload")]
    uploads: Vec<UploadXml>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UploadXml {
    key: String,
    upload_id: String,
}

/// A `ListPartsResult`, as far as gc reads it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PartsXml {
    is_truncated: bool,
    next_part_number_marker: Option<String>,
    #[serde(rename = "Part")]
    parts: Vec<PartXml>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PartXml {
    size: u64,
}

/// Reads one page of a `ListMultipartUploads` answer.
fn parse_uploads(xml: &str) -> std::result::Result<Page, quick_xml::DeError> {
    let page: UploadsXml = quick_xml::de::from_str(xml)?;
    let next = page
        .next_key_marker
        .filter(|k| !k.is_empty())
        .map(|k| (k, page.next_upload_id_marker.unwrap_or_default()));
    Ok(Page {
        uploads: page
            .uploads
            .into_iter()
            .map(|u| Upload {
                key: u.key,
                id: u.upload_id,
            })
            .collect(),
        truncated: page.is_truncated,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_uploads_is_read() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
            <ListMultipartUploadsResult><Bucket>b</Bucket><KeyMarker></KeyMarker>\
            <UploadIdMarker></UploadIdMarker><NextKeyMarker>repo/packs/cd/x</NextKeyMarker>\
            <NextUploadIdMarker>id&amp;2</NextUploadIdMarker><Prefix>repo/</Prefix>\
            <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>\
            <Upload><Key>repo/packs/ab/y</Key><UploadId>id1</UploadId>\
            <Initiator><ID>me</ID></Initiator><Initiated>2026-01-01T00:00:00Z</Initiated></Upload>\
            <Upload><Key>repo/packs/cd/x</Key><UploadId>id&amp;2</UploadId></Upload>\
            </ListMultipartUploadsResult>";
        let page = parse_uploads(xml).unwrap();
        assert_eq!(
            page,
            Page {
                uploads: vec![
                    Upload {
                        key: "repo/packs/ab/y".into(),
                        id: "id1".into()
                    },
                    Upload {
                        key: "repo/packs/cd/x".into(),
                        id: "id&2".into()
                    },
                ],
                truncated: true,
                next: Some(("repo/packs/cd/x".into(), "id&2".into())),
            }
        );
        let last = "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>\
            <NextKeyMarker/></ListMultipartUploadsResult>";
        let page = parse_uploads(last).unwrap();
        assert!(page.uploads.is_empty() && !page.truncated && page.next.is_none());
    }

    proptest::proptest! {
        /// Whatever a store answers, reading it is an answer or an error.
        #[test]
        fn any_answer_is_read_or_refused(body in "(<[A-Za-z]{0,12}/?>|</[A-Za-z]{0,12}>|[^<]{0,8}|&[a-z#0-9]{0,5};?){0,40}") {
            let _ = parse_uploads(&body);
            let _ = quick_xml::de::from_str::<PartsXml>(&body);
        }
    }

    #[test]
    fn an_answer_that_is_not_the_listing_is_an_error() {
        assert!(parse_uploads("<ListMultipartUploadsResult><Upload><Key>x").is_err());
        assert!(parse_uploads("<A><IsTruncated>maybe</IsTruncated></A>").is_err());
        let page = parse_uploads("<Other/>").unwrap();
        assert!(page.uploads.is_empty() && !page.truncated);
    }
}
