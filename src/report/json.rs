//! The JSON report: one documented, versioned shape (`docs/json-schema.md`, and the JSON Schema
//! `docs/report.schema.json` generated from the types below by [`schema`]). Within a schema
//! version fields are only added; a rename or removal bumps [`super::SCHEMA_VERSION`]. Written
//! straight to the output: findings are serialized one by one from an iterator, no JSON tree is
//! built (a node with 10,000 tunnels may have that many findings).

use serde::Serialize;

use super::{Finding, Header, Incomplete, Report, SeqIter, Summary, Suppression};

/// A finding as written: its stable `id` and its fields.
#[derive(Serialize, schemars::JsonSchema)]
pub struct FindingOut<'a> {
    /// Same across runs and salts for the same code and subject (never derived from a key).
    pub id: String,
    #[serde(flatten)]
    pub finding: &'a Finding,
}

/// A suppressed finding as written: the finding and why it is not counted.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SuppressedOut<'a> {
    pub id: String,
    #[serde(flatten)]
    pub finding: &'a Finding,
    pub suppression: &'a Suppression,
}

/// The whole document, for the schema. The writer streams the same fields in this order.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct ReportDocument<'a> {
    #[serde(flatten)]
    header: Header,
    summary: Summary,
    /// Most severe first, then by code, then by subject.
    findings: Vec<FindingOut<'a>>,
    /// Accepted by --skip or --ignore: listed with the reason, not counted in `summary.total`.
    suppressed: Vec<SuppressedOut<'a>>,
    /// Parts that could not be checked. Never a silent pass.
    incomplete: Vec<Incomplete>,
    /// Command-specific results (docs/json-schema.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(bound(serialize = "SeqIter<F>: Serialize, SeqIter<S>: Serialize"))]
struct Document<'a, F, S> {
    #[serde(flatten)]
    header: Header,
    summary: Summary,
    findings: SeqIter<F>,
    suppressed: SeqIter<S>,
    incomplete: &'a [Incomplete],
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
}

pub fn write(report: &Report, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let doc = Document {
        header: report.header(),
        summary: report.summary(),
        findings: SeqIter::new(report.findings.iter().map(|f| FindingOut {
            id: report.finding_id(f),
            finding: f,
        })),
        suppressed: SeqIter::new(report.suppressed.iter().map(|s| SuppressedOut {
            id: report.finding_id(&s.finding),
            finding: &s.finding,
            suppression: &s.suppression,
        })),
        incomplete: &report.incomplete,
        data: report.data.as_ref(),
    };
    serde_json::to_writer_pretty(&mut *w, &doc)?;
    w.write_all(b"\n")
}

/// The JSON Schema of the report (draft 2020-12), committed as `docs/report.schema.json`.
pub fn schema() -> String {
    let mut s = schemars::schema_for!(ReportDocument<'static>);
    s.insert(
        "$id".into(),
        "https://github.com/psk-guard/psk-guard/blob/main/docs/report.schema.json".into(),
    );
    let mut out = serde_json::to_string_pretty(&s).unwrap_or_default();
    out.push('\n');
    out
}
