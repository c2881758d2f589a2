//! OVSDB protocol types (RFC 7047 §5.1, §5.2): atoms, sets, maps, rows, transact operations and
//! their results, decoded from and encoded to JSON.
//!
//! Strings in OVSDB rows can be keys, so [`Str`] wipes its bytes when dropped and its `Debug` shows
//! only a length; decoding errors never quote the input. JSON trees that held a reply are wiped by
//! [`wipe_json`] once decoded.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value as Json};
use zeroize::{Zeroize, Zeroizing};

/// A string from the database. Wiped on drop; `Debug` redacts.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Str(Zeroizing<String>);

impl Str {
    pub fn new(s: impl Into<String>) -> Self {
        Str(Zeroizing::new(s.into()))
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
    /// Moves the bytes out, leaving this empty.
    pub fn take(&mut self) -> String {
        std::mem::take(&mut *self.0)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Str(<{} bytes>)", self.0.len())
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Str::new(s)
    }
}

/// One atomic value.
#[derive(Clone, Debug, PartialEq)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(Str),
    Uuid(String),
    NamedUuid(String),
}

/// A column value: an atom, a set or a map. A set of one element arrives as a bare atom; use
/// [`Value::as_set`] to read either form.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Atom(Atom),
    Set(Vec<Atom>),
    Map(Vec<(Atom, Atom)>),
}

/// Why a JSON value is not a valid OVSDB value. Never carries input content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("expected {expected}, found {found}")]
    Shape {
        expected: &'static str,
        found: &'static str,
    },
    #[error("unknown tagged value {0:?}")]
    UnknownTag(&'static str),
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn shape(expected: &'static str, found: &Json) -> ValueError {
    ValueError::Shape {
        expected,
        found: kind(found),
    }
}

impl Atom {
    pub fn string(s: impl Into<String>) -> Atom {
        Atom::String(Str::new(s))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<&str> {
        match self {
            Atom::Uuid(u) => Some(u),
            _ => None,
        }
    }

    /// Decodes an atom; strings are moved out of `v`, not copied.
    pub fn from_json(v: &mut Json) -> Result<Atom, ValueError> {
        match v {
            Json::Bool(b) => Ok(Atom::Boolean(*b)),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Atom::Integer(i))
                } else if let Some(f) = n.as_f64() {
                    Ok(Atom::Real(f))
                } else {
                    Err(shape("an integer or real", v))
                }
            }
            Json::String(s) => Ok(Atom::String(Str::new(std::mem::take(s)))),
            Json::Array(a) if a.len() == 2 => {
                let tag = match a[0].as_str() {
                    Some("uuid") => "uuid",
                    Some("named-uuid") => "named-uuid",
                    Some("set") | Some("map") => {
                        return Err(shape("an atom", v));
                    }
                    Some(_) => return Err(ValueError::UnknownTag("other")),
                    None => return Err(shape("a tagged atom", v)),
                };
                let Json::String(s) = &mut a[1] else {
                    return Err(shape("a uuid string", &a[1]));
                };
                let s = std::mem::take(s);
                Ok(if tag == "uuid" {
                    Atom::Uuid(s)
                } else {
                    Atom::NamedUuid(s)
                })
            }
            other => Err(shape("an atom", other)),
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(f) => json!(f),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => Json::String(s.as_str().to_owned()),
            Atom::Uuid(u) => json!(["uuid", u]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }
}

impl Value {
    /// Decodes a value; strings are moved out of `v`.
    pub fn from_json(v: &mut Json) -> Result<Value, ValueError> {
        if let Json::Array(a) = v {
            if a.len() == 2 {
                match a[0].as_str() {
                    Some("set") => {
                        let Json::Array(items) = &mut a[1] else {
                            return Err(shape("an array of set elements", &a[1]));
                        };
                        let atoms = items
                            .iter_mut()
                            .map(Atom::from_json)
                            .collect::<Result<_, _>>()?;
                        return Ok(Value::Set(atoms));
                    }
                    Some("map") => {
                        let Json::Array(pairs) = &mut a[1] else {
                            return Err(shape("an array of map pairs", &a[1]));
                        };
                        let mut out = Vec::with_capacity(pairs.len());
                        for p in pairs.iter_mut() {
                            match p {
                                Json::Array(kv) if kv.len() == 2 => {
                                    let (k, rest) = kv.split_at_mut(1);
                                    out.push((
                                        Atom::from_json(&mut k[0])?,
                                        Atom::from_json(&mut rest[0])?,
                                    ));
                                }
                                other => return Err(shape("a [key, value] pair", other)),
                            }
                        }
                        return Ok(Value::Map(out));
                    }
                    _ => {}
                }
            }
        }
        Atom::from_json(v).map(Value::Atom)
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Atom(a) => a.to_json(),
            Value::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Value::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// The elements, reading a bare atom as a set of one.
    pub fn as_set(&self) -> Vec<&Atom> {
        match self {
            Value::Atom(a) => vec![a],
            Value::Set(s) => s.iter().collect(),
            Value::Map(_) => vec![],
        }
    }

    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Atom(a) => Some(a),
            Value::Set(s) if s.len() == 1 => s.first(),
            _ => None,
        }
    }

    /// Looks up a string key in a map value.
    pub fn map_get(&self, key: &str) -> Option<&Atom> {
        match self {
            Value::Map(m) => m
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Like [`Value::map_get`], but mutable, so a value can be moved out.
    pub fn map_get_mut(&mut self, key: &str) -> Option<&mut Atom> {
        match self {
            Value::Map(m) => m
                .iter_mut()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn string_map(pairs: &[(&str, &str)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Atom::string(*k), Atom::string(*v)))
                .collect(),
        )
    }
}

/// A row: column name to value.
pub type Row = BTreeMap<String, Value>;

fn row_to_json(row: &Row) -> Json {
    Json::Object(
        row.iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect::<Map<_, _>>(),
    )
}

/// A condition `[column, function, value]`.
#[derive(Clone, Debug)]
pub struct Condition {
    pub column: String,
    pub function: &'static str,
    pub value: Value,
}

impl Condition {
    pub fn new(column: &str, function: &'static str, value: Value) -> Self {
        Condition {
            column: column.to_owned(),
            function,
            value,
        }
    }
    pub fn uuid_eq(uuid: &str) -> Self {
        Condition::new("_uuid", "==", Value::Atom(Atom::Uuid(uuid.to_owned())))
    }
    fn to_json(&self) -> Json {
        json!([self.column, self.function, self.value.to_json()])
    }
}

/// A mutation `[column, mutator, value]`.
#[derive(Clone, Debug)]
pub struct Mutation {
    pub column: String,
    pub mutator: &'static str,
    pub value: Value,
}

impl Mutation {
    pub fn new(column: &str, mutator: &'static str, value: Value) -> Self {
        Mutation {
            column: column.to_owned(),
            mutator,
            value,
        }
    }
}

/// One operation of a `transact` request.
#[derive(Clone, Debug)]
pub enum Operation {
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Insert {
        table: String,
        row: Row,
        uuid_name: Option<String>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        /// true: wait until the rows are equal ("=="); false: until they differ ("!=").
        until_equal: bool,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    },
    Comment(String),
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Select { .. } => "select",
            Operation::Insert { .. } => "insert",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Comment(_) => "comment",
        }
    }

    pub fn select(table: &str, conditions: Vec<Condition>, columns: &[&str]) -> Self {
        Operation::Select {
            table: table.to_owned(),
            conditions,
            columns: Some(columns.iter().map(|c| c.to_string()).collect()),
        }
    }

    pub fn to_json(&self) -> Json {
        let conds = |c: &[Condition]| Json::Array(c.iter().map(Condition::to_json).collect());
        match self {
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                let mut o = json!({"op": "select", "table": table, "where": conds(conditions)});
                if let Some(cols) = columns {
                    o["columns"] = json!(cols);
                }
                o
            }
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                let mut o = json!({"op": "insert", "table": table, "row": row_to_json(row)});
                if let Some(n) = uuid_name {
                    o["uuid-name"] = json!(n);
                }
                o
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => json!({"op": "update", "table": table, "where": conds(conditions),
                        "row": row_to_json(row)}),
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => json!({"op": "mutate", "table": table, "where": conds(conditions),
                "mutations": mutations.iter()
                    .map(|m| json!([m.column, m.mutator, m.value.to_json()]))
                    .collect::<Vec<_>>()}),
            Operation::Delete { table, conditions } => {
                json!({"op": "delete", "table": table, "where": conds(conditions)})
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until_equal,
                rows,
                timeout_ms,
            } => {
                let mut o = json!({"op": "wait", "table": table, "where": conds(conditions),
                    "columns": columns, "until": if *until_equal { "==" } else { "!=" },
                    "rows": rows.iter().map(row_to_json).collect::<Vec<_>>()});
                if let Some(t) = timeout_ms {
                    o["timeout"] = json!(t);
                }
                o
            }
            Operation::Comment(c) => json!({"op": "comment", "comment": c}),
        }
    }
}

/// The error an operation (or the commit) reported. ovsdb-server's details can quote the
/// request's values (a constraint violation quotes the value it rejects, which in a key write is
/// a key), so they are wiped on drop, and withheld altogether for a transaction that carried a
/// key ([`TransactReply::withhold_details`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub error: String,
    pub details: Option<Zeroizing<String>>,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Server prose: bounded and escaped so a pathological reply cannot flood or drive a
        // terminal.
        use crate::report::sanitize::{bounded, MAX_NAME};
        f.write_str(&bounded(&self.error, MAX_NAME))?;
        if let Some(d) = &self.details {
            write!(f, " ({})", bounded(d, 300))?;
        }
        Ok(())
    }
}

/// The result of one successful operation.
#[derive(Clone, Debug, PartialEq)]
pub enum OpResult {
    Insert { uuid: String },
    Select { rows: Vec<Row> },
    Count(u64),
    Empty,
}

/// A whole transact reply, per RFC 7047 §4.1.3: the per-op outcomes (an `Err` for the op that
/// failed, `None` for the ops after it that never ran) and the extra entry a commit failure adds.
#[derive(Debug)]
pub struct TransactReply {
    pub results: Vec<Option<Result<OpResult, OpError>>>,
    pub commit_error: Option<OpError>,
}

/// What stands for the server's details of an error of a transaction that carried a key.
pub const WITHHELD: &str = "details withheld: the request carried a key";

impl TransactReply {
    /// Drops (and wipes) the server's `details` of every error: for a transaction that carried a
    /// key, whose details could quote it. The error tag (`constraint violation`, ...) stays.
    pub fn withhold_details(&mut self) {
        let errors = self
            .results
            .iter_mut()
            .filter_map(|r| r.as_mut().and_then(|r| r.as_mut().err()))
            .chain(self.commit_error.as_mut());
        for e in errors {
            if e.details.take().is_some() {
                e.details = Some(Zeroizing::new(WITHHELD.to_owned()));
            }
        }
    }
}

/// Receives the rows of select results while the reply is parsed, straight from its bytes: no
/// JSON tree, no per-row map unless the sink builds one.
pub trait RowSink<'de> {
    /// Called once per row of operation `op`'s select result with the row's columns unread. The
    /// sink must read every entry of `row` (use [`de::IgnoredAny`] for columns it skips).
    fn row<A: MapAccess<'de>>(&mut self, op: usize, row: A) -> Result<(), A::Error>;
}

/// One entry of a transact result array as parsed: the rows went to the sink.
#[derive(Default)]
struct RawEntry {
    error: Option<String>,
    details: Option<Zeroizing<String>>,
    uuid: Option<Atom>,
    rows: bool,
    count: Option<u64>,
}

impl RawEntry {
    fn into_error(self) -> Result<OpError, Self> {
        match self.error {
            Some(error) => Ok(OpError {
                error,
                details: self.details,
            }),
            None => Err(self),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum EntryField {
    Error,
    Details,
    Uuid,
    Rows,
    Count,
    #[serde(other)]
    Other,
}

/// The result array: entry `i` is decoded for operation `ops[i]` (named by [`Operation::name`]).
struct ResultsSeed<'a, S> {
    ops: &'a [&'static str],
    sink: &'a mut S,
}

impl<'de, S: RowSink<'de>> DeserializeSeed<'de> for ResultsSeed<'_, S> {
    type Value = Vec<Option<RawEntry>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: RowSink<'de>> Visitor<'de> for ResultsSeed<'_, S> {
    type Value = Vec<Option<RawEntry>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of operation results")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.ops.len() + 1);
        loop {
            let index = out.len();
            if index > self.ops.len() {
                // More entries than operations plus a commit error: counted, not decoded.
                match seq.next_element::<de::IgnoredAny>()? {
                    Some(_) => out.push(None),
                    None => break,
                }
                continue;
            }
            let seed = EntrySeed {
                index,
                select: self.ops.get(index) == Some(&"select"),
                sink: &mut *self.sink,
            };
            match seq.next_element_seed(seed)? {
                Some(e) => out.push(e),
                None => break,
            }
        }
        Ok(out)
    }
}

struct EntrySeed<'a, S> {
    index: usize,
    select: bool,
    sink: &'a mut S,
}

impl<'de, S: RowSink<'de>> DeserializeSeed<'de> for EntrySeed<'_, S> {
    type Value = Option<RawEntry>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: RowSink<'de>> Visitor<'de> for EntrySeed<'_, S> {
    type Value = Option<RawEntry>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an operation result object or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut e = RawEntry::default();
        while let Some(field) = map.next_key::<EntryField>()? {
            match field {
                EntryField::Error => e.error = map.next_value()?,
                EntryField::Details => {
                    e.details = map.next_value::<Option<String>>()?.map(Zeroizing::new)
                }
                EntryField::Uuid => e.uuid = map.next_value()?,
                EntryField::Count => e.count = map.next_value()?,
                EntryField::Rows if self.select => {
                    map.next_value_seed(RowsSeed {
                        index: self.index,
                        sink: &mut *self.sink,
                    })?;
                    e.rows = true;
                }
                EntryField::Rows | EntryField::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Some(e))
    }
}

struct RowsSeed<'a, S> {
    index: usize,
    sink: &'a mut S,
}

impl<'de, S: RowSink<'de>> DeserializeSeed<'de> for RowsSeed<'_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: RowSink<'de>> Visitor<'de> for RowsSeed<'_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(RowSeed {
                index: self.index,
                sink: &mut *self.sink,
            })?
            .is_some()
        {}
        Ok(())
    }
}

struct RowSeed<'a, S> {
    index: usize,
    sink: &'a mut S,
}

impl<'de, S: RowSink<'de>> DeserializeSeed<'de> for RowSeed<'_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: RowSink<'de>> Visitor<'de> for RowSeed<'_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.sink.row(self.index, map)
    }
}

/// The sink of [`TransactReply::from_slice`]: every row as a [`Row`].
pub(crate) struct CollectRows(Vec<Vec<Row>>);

impl CollectRows {
    pub(crate) fn new(ops: usize) -> Self {
        CollectRows(vec![Vec::new(); ops])
    }

    /// Puts the collected rows into the select results of `reply`.
    pub(crate) fn fill(self, mut reply: TransactReply) -> TransactReply {
        for (r, got) in reply.results.iter_mut().zip(self.0) {
            if let Some(Ok(OpResult::Select { rows })) = r {
                *rows = got;
            }
        }
        reply
    }
}

impl<'de> RowSink<'de> for CollectRows {
    fn row<A: MapAccess<'de>>(&mut self, op: usize, mut map: A) -> Result<(), A::Error> {
        let mut row = Row::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value::<Value>()?;
            row.insert(k, v);
        }
        self.0[op].push(row);
        Ok(())
    }
}

/// Decodes the raw `result` array of a transact reply for operations named `ops` (see
/// [`Operation::name`]) in one pass over the bytes, handing each select row to `sink` as it is
/// parsed. Select results in the returned reply have no rows: the sink has them.
pub fn decode_transact<'de, S: RowSink<'de>>(
    ops: &[&'static str],
    result: &'de [u8],
    sink: &mut S,
) -> Result<TransactReply, ValueError> {
    let mut d = serde_json::Deserializer::from_slice(result);
    let entries = ResultsSeed { ops, sink }
        .deserialize(&mut d)
        .and_then(|v| d.end().map(|()| v))
        .map_err(|e| {
            // serde's message could quote row data: keep only the category.
            ValueError::Shape {
                expected: "an array of operation results",
                found: match e.classify() {
                    serde_json::error::Category::Data => "a value of another shape",
                    _ => "invalid JSON",
                },
            }
        })?;
    if entries.len() < ops.len() || entries.len() > ops.len() + 1 {
        return Err(ValueError::Shape {
            expected: "one result per operation (plus at most one commit error)",
            found: "a different number of results",
        });
    }
    let mut entries = entries.into_iter();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match entries.next().flatten() {
            None => None,
            Some(entry) => Some(match entry.into_error() {
                Ok(e) => Err(e),
                Err(entry) => Ok(decode_op_result(op, entry)?),
            }),
        });
    }
    let commit_error = match entries.next() {
        Some(Some(entry)) => Some(entry.into_error().map_err(|_| ValueError::Shape {
            expected: "an error object after the last operation result",
            found: "an object without \"error\"",
        })?),
        Some(None) => {
            return Err(ValueError::Shape {
                expected: "a commit error object",
                found: "null",
            })
        }
        None => None,
    };
    Ok(TransactReply {
        results,
        commit_error,
    })
}

/// The names of `ops`, what [`decode_transact`] needs to know of them.
pub fn op_names(ops: &[Operation]) -> Vec<&'static str> {
    ops.iter().map(Operation::name).collect()
}

impl TransactReply {
    /// Decodes the raw `result` array of a transact reply for `ops`, rows as [`Row`]s.
    pub fn from_slice(ops: &[Operation], result: &[u8]) -> Result<Self, ValueError> {
        let names = op_names(ops);
        let mut rows = CollectRows::new(names.len());
        let reply = decode_transact(&names, result, &mut rows)?;
        Ok(rows.fill(reply))
    }

    /// The results if every operation and the commit succeeded; otherwise the first error, with
    /// the index and name of the operation that failed.
    pub fn into_results(self, ops: &[Operation]) -> Result<Vec<OpResult>, super::Error> {
        self.into_results_named(&op_names(ops))
    }

    /// [`TransactReply::into_results`] for operations known by name.
    pub fn into_results_named(self, ops: &[&'static str]) -> Result<Vec<OpResult>, super::Error> {
        let mut out = Vec::with_capacity(self.results.len());
        for (i, r) in self.results.into_iter().enumerate() {
            match r {
                Some(Ok(r)) => out.push(r),
                Some(Err(e)) => {
                    return Err(super::Error::OpFailed {
                        index: i,
                        op: ops[i],
                        error: e,
                    })
                }
                None => {
                    return Err(super::Error::Protocol {
                        method: "transact",
                        what: format!("operation {i} has no result although none failed before it"),
                    })
                }
            }
        }
        if let Some(e) = self.commit_error {
            return Err(super::Error::CommitFailed(e));
        }
        Ok(out)
    }
}

fn missing(expected: &'static str) -> ValueError {
    ValueError::Shape {
        expected,
        found: "an object without it",
    }
}

fn decode_op_result(op: &str, e: RawEntry) -> Result<OpResult, ValueError> {
    Ok(match op {
        "insert" => match e.uuid {
            Some(Atom::Uuid(uuid)) => OpResult::Insert { uuid },
            _ => return Err(missing("an insert result with a \"uuid\"")),
        },
        "select" if e.rows => OpResult::Select { rows: vec![] },
        "select" => return Err(missing("a select result with \"rows\"")),
        "update" | "mutate" | "delete" => {
            OpResult::Count(e.count.ok_or_else(|| missing("a result with \"count\""))?)
        }
        _ => OpResult::Empty,
    })
}

// ---- serde: atoms and values straight from reply bytes (no intermediate JSON tree) ----

struct AtomVisitor;

impl<'de> Visitor<'de> for AtomVisitor {
    type Value = Atom;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB atom")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Atom, E> {
        Ok(Atom::Boolean(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Atom, E> {
        Ok(Atom::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Atom, E> {
        i64::try_from(v)
            .map(Atom::Integer)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Atom, E> {
        Ok(Atom::Real(v))
    }
    // No `visit_str`: strings never come through here (see `raw_string`), because a JSON reader
    // hands an escaped string to `visit_str` from a scratch buffer it frees unwiped.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        let tag: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("empty array"))?;
        let id: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("no uuid"))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a tagged atom has two elements"));
        }
        match tag.as_str() {
            "uuid" => Ok(Atom::Uuid(id)),
            "named-uuid" => Ok(Atom::NamedUuid(id)),
            _ => Err(de::Error::custom("not a uuid or named-uuid atom")),
        }
    }
}

/// A string atom read from its raw JSON literal with our own unescaper, straight into a wiping
/// [`Str`]: row strings can be keys, and serde_json would decode an escaped string (a key with a
/// `"` or `\\` in it) through a scratch buffer that it frees without wiping.
fn raw_string<E: de::Error>(raw: &str) -> Result<Str, E> {
    crate::secret::json_string_literal(raw.as_bytes())
        .map(|mut z| Str::new(std::mem::take(&mut *z)))
        .map_err(|e| E::custom(e))
}

/// Decodes a non-string value from its raw JSON text with `visitor` (nested atoms come back here
/// through `Atom::deserialize`, still borrowing from the original reply bytes).
fn from_raw<'de, V: Visitor<'de>, E: de::Error>(
    raw: &'de RawValue,
    visitor: V,
) -> Result<V::Value, E> {
    let mut d = serde_json::Deserializer::from_str(raw.get());
    let v = serde::Deserializer::deserialize_any(&mut d, visitor).map_err(E::custom)?;
    d.end().map_err(E::custom)?;
    Ok(v)
}

/// Atoms (and [`Value`]s) decode only from a serde_json reader over borrowed bytes
/// (`from_slice`/`from_str`), which can hand out each value's raw text.
impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        if raw.get().starts_with('"') {
            return raw_string(raw.get()).map(Atom::String);
        }
        from_raw(raw, AtomVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        AtomVisitor.visit_bool(v).map(Value::Atom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        AtomVisitor.visit_i64(v).map(Value::Atom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        AtomVisitor.visit_u64(v).map(Value::Atom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        AtomVisitor.visit_f64(v).map(Value::Atom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let tag: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("empty array"))?;
        let v = match tag.as_str() {
            "set" => Value::Set(
                seq.next_element()?
                    .ok_or_else(|| de::Error::custom("no set elements"))?,
            ),
            "map" => Value::Map(
                seq.next_element()?
                    .ok_or_else(|| de::Error::custom("no map pairs"))?,
            ),
            "uuid" => Value::Atom(Atom::Uuid(
                seq.next_element()?
                    .ok_or_else(|| de::Error::custom("no uuid"))?,
            )),
            "named-uuid" => Value::Atom(Atom::NamedUuid(
                seq.next_element()?
                    .ok_or_else(|| de::Error::custom("no uuid"))?,
            )),
            _ => return Err(de::Error::custom("unknown tagged value")),
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a tagged value has two elements"));
        }
        Ok(v)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        if raw.get().starts_with('"') {
            return raw_string(raw.get()).map(|s| Value::Atom(Atom::String(s)));
        }
        from_raw(raw, ValueVisitor)
    }
}

/// Overwrites every string in a JSON tree (keys of objects cannot be reached mutably and are
/// column names, not data), then empties it.
pub fn wipe_json(v: &mut Json) {
    match v {
        Json::String(s) => s.zeroize(),
        Json::Array(a) => {
            a.iter_mut().for_each(wipe_json);
            a.clear();
        }
        Json::Object(o) => {
            o.values_mut().for_each(wipe_json);
            o.clear();
        }
        _ => {}
    }
    *v = Json::Null;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_value_form() {
        let mut v = json!(["map", [["psk", "k1"], ["remote_ip", "10.0.0.2"]]]);
        let m = Value::from_json(&mut v).unwrap();
        assert_eq!(
            m.map_get("remote_ip").and_then(Atom::as_str),
            Some("10.0.0.2")
        );
        let mut bare = json!(["uuid", "0a"]);
        let s = Value::from_json(&mut bare).unwrap();
        assert_eq!(s.as_set().len(), 1);
        let mut set = json!(["set", [["uuid", "a"], ["uuid", "b"]]]);
        assert_eq!(Value::from_json(&mut set).unwrap().as_set().len(), 2);
        let mut empty = json!(["set", []]);
        assert!(Value::from_json(&mut empty).unwrap().as_set().is_empty());
        let mut named = json!(["named-uuid", "row1"]);
        assert_eq!(
            Value::from_json(&mut named).unwrap(),
            Value::Atom(Atom::NamedUuid("row1".into()))
        );
        let mut real = json!(1.5);
        assert_eq!(
            Value::from_json(&mut real).unwrap(),
            Value::Atom(Atom::Real(1.5))
        );
        let mut bad = json!(["bogus", 1]);
        assert!(Value::from_json(&mut bad).is_err());
    }

    #[test]
    fn serde_decoding_matches_tree_decoding() {
        for j in [
            json!(["map", [["psk", "k1"], ["remote_ip", "10.0.0.2"]]]),
            json!(["uuid", "0a"]),
            json!(["set", [["uuid", "a"], ["uuid", "b"]]]),
            json!(["set", []]),
            json!(["named-uuid", "row1"]),
            json!(1.5),
            json!(-3),
            json!(true),
            json!("s"),
        ] {
            let mut t = j.clone();
            let a = Value::from_json(&mut t).unwrap();
            let b: Value = serde_json::from_str(&j.to_string()).unwrap();
            assert_eq!(a, b);
        }
        for bad in [
            json!(["bogus", 1]),
            json!(["set"]),
            json!(["uuid", "a", "b"]),
            json!({}),
        ] {
            assert!(serde_json::from_str::<Value>(&bad.to_string()).is_err());
        }
        // Escaped strings, at the top and nested, are decoded by our unescaper.
        for (text, want) in [
            (
                r#""k\"ey \u00e9""#,
                Value::Atom(Atom::string("k\"ey \u{e9}")),
            ),
            (
                r#"["map", [["psk", "a\\b"], ["x", "\ud83d\ude00"]]]"#,
                Value::string_map(&[("psk", "a\\b"), ("x", "\u{1F600}")]),
            ),
            (
                r#"["set", ["\t", 2]]"#,
                Value::Set(vec![Atom::string("\t"), Atom::Integer(2)]),
            ),
        ] {
            assert_eq!(serde_json::from_str::<Value>(text).unwrap(), want, "{text}");
        }
        for bad in [
            r#""\ud800""#,
            "[\"set\", [\"a\u{1}b\"]]",
            r#"["map", [["psk", "\q"]]]"#,
        ] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roundtrip() {
        let v = Value::string_map(&[("a", "b")]);
        let mut j = v.to_json();
        assert_eq!(Value::from_json(&mut j).unwrap(), v);
    }

    #[test]
    fn transact_errors_per_op_and_commit() {
        let ops = vec![
            Operation::Comment("x".into()),
            Operation::Delete {
                table: "T".into(),
                conditions: vec![],
            },
        ];
        let r = br#"[{}, {"count": 1}, {"error": "constraint violation", "details": "d"}]"#;
        let reply = TransactReply::from_slice(&ops, r).unwrap();
        assert_eq!(
            reply.commit_error.as_ref().unwrap().error,
            "constraint violation"
        );
        assert!(matches!(
            reply.into_results(&ops),
            Err(crate::ovsdb::Error::CommitFailed(_))
        ));
        let r = br#"[{"error": "aborted"}, null]"#;
        let reply = TransactReply::from_slice(&ops, r).unwrap();
        assert!(reply.results[1].is_none());
        assert!(matches!(
            reply.into_results(&ops),
            Err(crate::ovsdb::Error::OpFailed { index: 0, .. })
        ));
    }
}
