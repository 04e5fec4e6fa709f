//! The columns of `results.csv` and the keys of `results.jsonl`: each name once, whatever
//! the parameters and the fields of the outputs are called, and a record's cell of each.

use std::collections::{HashMap, HashSet};

use indexmap::IndexSet;

use super::{LEADING, TRAILING};
use crate::{ProcessRecord, Value};

/// The columns of `results.csv` (the keys of `results.jsonl`): `id`, `run`, the parameters,
/// the fixed status columns, the output's fields, `reason` — every name once.
///
/// A parameter named like a fixed column gets `~2`. An output field named like a fixed
/// column, `reason` or a parameter gets the prefix `output.`; a name still taken then gets
/// the first free suffix `~2`, `~3`, … Names are given in the order the records are read
/// (by id), so the same journal always gives the same columns.
pub(super) struct Columns {
    pub(super) names: Vec<String>,
    /// A parameter's column.
    params: HashMap<String, usize>,
    /// An output field's column (by its name from [`output_fields`]).
    outputs: HashMap<String, usize>,
}

impl Columns {
    pub(super) fn new(params: &IndexSet<String>, outputs: &IndexSet<String>) -> Columns {
        let mut taken: HashSet<String> =
            LEADING.iter().chain(&TRAILING).chain(&["reason"]).map(|s| s.to_string()).collect();
        let mut names: Vec<String> = LEADING.iter().map(|s| s.to_string()).collect();
        fn claim(name: String, taken: &mut HashSet<String>, names: &mut Vec<String>) -> usize {
            let name = first_free(name, |n| taken.contains(n));
            taken.insert(name.clone());
            names.push(name);
            names.len() - 1
        }
        let params = params.iter().map(|p| (p.clone(), claim(p.clone(), &mut taken, &mut names))).collect();
        names.extend(TRAILING.iter().map(|s| s.to_string()));
        let outputs = outputs
            .iter()
            .map(|field| {
                let name = if taken.contains(field) { format!("output.{field}") } else { field.clone() };
                (field.clone(), claim(name, &mut taken, &mut names))
            })
            .collect();
        names.push("reason".into());
        Columns { names, params, outputs }
    }

    /// Fills `cells` with `record`'s cell of each column (`None` where it has none).
    pub(super) fn fill(&self, record: &ProcessRecord, cells: &mut Vec<Option<Value>>) {
        cells.clear();
        cells.resize(self.names.len(), None);
        cells[0] = Some(Value::from(record.id));
        cells[1] = Some(Value::Int(i64::from(record.run)));
        for (name, value) in &record.params {
            if let Some(&i) = self.params.get(name) {
                cells[i] = Some(value.clone());
            }
        }
        let first = LEADING.len() + self.params.len();
        let fixed = [
            Value::Str(record.status.as_str().into()),
            Value::Float(record.duration_s),
            crate::utc::format_rfc3339(record.started_at).map_or(Value::Null, Value::Str),
            Value::Str(record.location.host.clone()),
            Value::Str(record.location.worker.clone()),
            Value::Int(i64::from(record.attempts)),
        ];
        for (i, value) in fixed.into_iter().enumerate() {
            cells[first + i] = Some(value);
        }
        if let Some(map) = flat_output(record) {
            for (field, value) in map {
                if let Some(&i) = self.outputs.get(field) {
                    cells[i] = Some(value.clone());
                }
            }
        } else {
            for (field, value) in output_fields(record) {
                if let Some(&i) = self.outputs.get(&field) {
                    cells[i] = Some(value);
                }
            }
        }
        let last = self.names.len() - 1;
        cells[last] = Some(record.reason.clone().map(Value::Str).unwrap_or(Value::Null));
    }
}

/// `name` if it is not `taken`, else the first of `name~2`, `name~3`, … that is not.
fn first_free(name: String, taken: impl Fn(&str) -> bool) -> String {
    if !taken(&name) {
        return name;
    }
    (2u64..).map(|n| format!("{name}~{n}")).find(|n| !taken(n)).unwrap_or(name)
}

/// The fields of a record's output, flattened (`a.b`, an empty key as `_`), each name once
/// within the record: a repeated name (`{"a.b": 1, "a": {"b": 2}}`) gets the first free
/// suffix `~2`, `~3`, … An output that is not a table is the one field `output`.
pub(super) fn output_fields(record: &ProcessRecord) -> Vec<(String, Value)> {
    let mut fields = Vec::new();
    match &record.output {
        Value::Null => {}
        Value::Map(map) if map.is_empty() => {}
        Value::Map(_) => record.output.flatten_into("", &mut fields),
        other => fields.push(("output".to_owned(), other.clone())),
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(fields.len());
    for (name, _) in &mut fields {
        if !seen.insert(name.clone()) {
            *name = first_free(std::mem::take(name), |n| seen.contains(n));
            seen.insert(name.clone());
        }
    }
    fields
}

/// A record's output when it is a table whose fields are [`output_fields`] as they are: no
/// empty key and no table inside (the usual output), so its keys are the field names
/// without a name being made per record.
pub(super) fn flat_output(record: &ProcessRecord) -> Option<&indexmap::IndexMap<String, Value>> {
    match &record.output {
        Value::Map(map)
            if map.iter().all(|(key, value)| !key.is_empty() && !matches!(value, Value::Map(m) if !m.is_empty())) =>
        {
            Some(map)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::super::{consolidate_dir, files, read_results_jsonl};
    use super::*;
    use crate::journal::JournalWriter;
    use crate::Params;
    use proptest::prelude::*;

    /// The rows of results.csv (header first) and results.jsonl.
    type Consolidation = (Vec<Vec<String>>, Vec<serde_json::Map<String, serde_json::Value>>);

    /// Consolidates records with these parameters and outputs.
    fn consolidate_outputs(records: &[(Params, Value)]) -> Consolidation {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut writer = JournalWriter::create(&dir.path().join(files::JOURNAL)).expect("a journal");
        for (id, (params, output)) in records.iter().enumerate() {
            let record = ProcessRecord { params: params.clone(), output: output.clone(), ..record(id as u64, 0) };
            writer.append(&record).expect("appends");
        }
        writer.sync().expect("syncs");
        consolidate_dir(dir.path()).expect("consolidates");
        let mut csv = csv::Reader::from_path(dir.path().join(files::RESULTS_CSV)).expect("results.csv");
        let mut rows = vec![csv.headers().expect("a header").iter().map(str::to_owned).collect::<Vec<_>>()];
        for row in csv.records() {
            rows.push(row.expect("a row").iter().map(str::to_owned).collect());
        }
        (rows, read_results_jsonl(dir.path()).expect("results.jsonl"))
    }

    fn json(text: &str) -> Value {
        serde_json::from_str::<serde_json::Value>(text).expect("JSON").into()
    }

    #[test]
    fn every_output_value_gets_a_column_of_its_own() {
        let params: Params =
            [("v".to_owned(), Value::Int(1)), ("output.v".to_owned(), Value::Int(2))].into_iter().collect();
        let output = json(r#"{"a.b": 1, "a": {"b": 2}, "v": 3, "": 4, "status": 5, "big": 18446744073709551615}"#);
        let (rows, jsonl) = consolidate_outputs(&[(params, output)]);
        assert_eq!(
            rows[0],
            [
                "id",
                "run",
                "v",
                "output.v",
                "status",
                "duration_s",
                "started_at",
                "host",
                "worker",
                "attempts",
                "a.b",
                "a.b~2",
                "output.v~2",
                "_",
                "output.status",
                "big",
                "reason"
            ]
        );
        let row = &rows[1];
        assert_eq!((&row[2], &row[3], &row[4]), (&"1".to_owned(), &"2".to_owned(), &"finished".to_owned()));
        assert_eq!(row[10..16], ["1", "2", "3", "4", "5", "18446744073709551615"]);
        let line = &jsonl[0];
        assert_eq!(
            (&line["a.b"], &line["a.b~2"], &line["output.v~2"], &line["_"]),
            (&1.into(), &2.into(), &3.into(), &4.into())
        );
        assert_eq!(line["big"].as_u64(), Some(u64::MAX), "the exact integer: {line:?}");
        assert_eq!(line["output.status"], 5);
        assert_eq!(line.len(), rows[0].len(), "{line:?}");
        // When it started, as RFC 3339 UTC in both files (the record's is 0 s after the epoch).
        assert_eq!(row[6], "1970-01-01T00:00:00.000000Z");
        assert_eq!(line["started_at"], "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn non_finite_outputs_are_written_faithfully() {
        let output = Value::Map(
            [("nan", f64::NAN), ("inf", f64::INFINITY), ("ninf", f64::NEG_INFINITY)]
                .into_iter()
                .map(|(k, f)| (k.to_owned(), Value::Float(f)))
                .collect(),
        );
        let (rows, jsonl) = consolidate_outputs(&[(Params::new(), output)]);
        assert_eq!(rows[0][8..11], ["nan", "inf", "ninf"]);
        assert_eq!(rows[1][8..11], ["NaN", "inf", "-inf"]);
        assert_eq!(
            (&jsonl[0]["nan"], &jsonl[0]["inf"], &jsonl[0]["ninf"]),
            (&"NaN".into(), &"Infinity".into(), &"-Infinity".into())
        );
    }

    /// Tables with keys that collide once flattened, or with columns.
    fn tricky_output() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just(String::new()),
            Just("_".to_owned()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("a.b".to_owned()),
            Just("a.b~2".to_owned()),
            Just("v".to_owned()),
            Just("output.v".to_owned()),
            Just("status".to_owned()),
            Just("reason".to_owned()),
            Just("id".to_owned()),
        ];
        let leaf = prop_oneof![any::<i64>().prop_map(Value::Int), "[a-z]{0,3}".prop_map(Value::Str)];
        leaf.prop_recursive(3, 12, 4, move |inner| {
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| Value::Map(kv.into_iter().collect()))
        })
    }

    proptest! {
        /// Whatever the outputs, the header names each column once and every leaf of every
        /// output reaches its row of results.csv and results.jsonl.
        #[test]
        fn every_leaf_reaches_the_results(outputs in prop::collection::vec(tricky_output(), 1..4)) {
            let params: Params =
                [("v".to_owned(), Value::Int(-1)), ("output.v".to_owned(), Value::Int(-2))].into_iter().collect();
            let records: Vec<(Params, Value)> = outputs.iter().map(|o| (params.clone(), o.clone())).collect();
            let (rows, jsonl) = consolidate_outputs(&records);
            let header = &rows[0];
            let unique: HashSet<&String> = header.iter().collect();
            prop_assert_eq!(unique.len(), header.len(), "{:?}", header);
            let fixed = LEADING.len() + params.len() + TRAILING.len();
            for (n, output) in outputs.iter().enumerate() {
                let mut leaves = Vec::new();
                if !matches!(output, Value::Map(m) if m.is_empty()) {
                    output.flatten_into("", &mut leaves);
                }
                let mut expected: Vec<String> = leaves.iter().map(|(_, v)| v.to_string()).collect();
                let row = &rows[n + 1];
                let mut in_csv: Vec<String> = (fixed..header.len() - 1)
                    .filter(|&i| jsonl[n].contains_key(&header[i]))
                    .map(|i| row[i].clone())
                    .collect();
                expected.sort();
                in_csv.sort();
                prop_assert_eq!(&in_csv, &expected, "{:?} in {:?}", output, header);
                prop_assert_eq!(jsonl[n].len(), fixed + leaves.len() + 1, "{:?}", jsonl[n]);
                prop_assert_eq!(&row[2..4], &["-1".to_owned(), "-2".to_owned()][..]);
            }
        }
    }
}
