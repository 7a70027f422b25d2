//! The few fields simcache reads from SFM bodies, and the pure decisions
//! built on them: which event an index names, what a fresh event list
//! changes in the index, and the append-only merge of event lists.
//!
//! An event's **identity** is its waveform key when upstream gives one,
//! else its index at download time and its timestamp. An erase re-uses
//! indexes, so an index is only ever a pointer to an identity.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// What info (or the device part of an event list) says about the unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFacts {
    pub serial: Option<String>,
    pub firmware: Option<String>,
    pub event_count: Option<i64>,
}

fn str_field(v: &Value, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| v.get(*n)).and_then(|x| match x {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Reads serial, firmware and event count from an info body, or from the
/// device object an event list carries.
pub fn unit_facts(body: &[u8]) -> UnitFacts {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return UnitFacts::default();
    };
    let from = |o: &Value| UnitFacts {
        serial: str_field(o, &["serial", "serial_number"]),
        firmware: str_field(o, &["firmware", "firmware_version"]),
        event_count: o.get("event_count").and_then(Value::as_i64),
    };
    let top = from(&v);
    let dev = v
        .get("device")
        .or_else(|| v.get("info"))
        .map(from)
        .unwrap_or_default();
    UnitFacts {
        serial: top.serial.or(dev.serial),
        firmware: top.firmware.or(dev.firmware),
        event_count: top.event_count.or(dev.event_count),
    }
}

/// The identity of an event object, if it carries enough to tell.
pub fn event_identity(ev: &Value) -> Option<(Option<i64>, String)> {
    let index = ev.get("index").and_then(Value::as_i64);
    if let Some(k) = str_field(ev, &["waveform_key", "key"]) {
        return Some((index, format!("wk:{k}")));
    }
    let ts = ev.get("timestamp")?;
    let stamp = match ts {
        Value::String(s) => s.clone(),
        Value::Object(_) => {
            let p = |k: &str| ts.get(k).and_then(Value::as_i64).unwrap_or(0);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                p("year"),
                p("month"),
                p("day"),
                p("hour"),
                p("minute"),
                p("second")
            )
        }
        _ => return None,
    };
    Some((index, format!("ev:{}@{stamp}", index?)))
}

/// The identity a single event or waveform body names (its own `index`,
/// `timestamp` or waveform key), if it carries them.
pub fn body_identity(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    event_identity(&v)
        .or_else(|| v.get("event").and_then(event_identity))
        .map(|(_, id)| id)
}

#[derive(Deserialize)]
struct ListShape<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// The events of an event-list body (a bare array or `{"events": [...]}`):
/// (index, identity) of each event that has both.
pub fn listed_events(body: &[u8]) -> Option<Vec<(i64, String)>> {
    let raws = raw_events(body)?;
    Some(
        raws.iter()
            .filter_map(|r| serde_json::from_str::<Value>(r.get()).ok())
            .filter_map(|v| match event_identity(&v) {
                Some((Some(i), id)) => Some((i, id)),
                _ => None,
            })
            .collect(),
    )
}

fn raw_events(body: &[u8]) -> Option<Vec<&RawValue>> {
    let s = std::str::from_utf8(body).ok()?;
    let t = s.trim_start();
    if t.starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(s).ok()
    } else {
        serde_json::from_str::<ListShape>(s).ok().map(|l| l.events)
    }
}

/// What a fresh event list changes in the index: the links to write and
/// the indexes whose event changed (an erase re-used them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexChange {
    pub links: Vec<(i64, String)>,
    pub unlink: Vec<i64>,
}

/// Compares the known index with a fresh list. Pure.
pub fn reconcile(known: &[(i64, String)], fresh: &[(i64, String)]) -> IndexChange {
    let mut change = IndexChange::default();
    for (idx, id) in fresh {
        match known.iter().find(|(i, _)| i == idx) {
            Some((_, old)) if old == id => {}
            Some(_) => {
                change.unlink.push(*idx);
                change.links.push((*idx, id.clone()));
            }
            None => change.links.push((*idx, id.clone())),
        }
    }
    change
}

/// Append-only merge: the fresh list, plus events of the cached list that
/// it no longer shows at indexes it does not use (a unit that returns only
/// new events). When nothing is added the fresh body is kept byte for byte.
pub fn merge_lists(cached: Option<&[u8]>, fresh: &Bytes) -> Bytes {
    let (Some(cached), Some(new)) = (cached, raw_events(fresh)) else {
        return fresh.clone();
    };
    let Some(old) = raw_events(cached) else {
        return fresh.clone();
    };
    let ids = |rs: &[&RawValue]| -> Vec<(Option<i64>, Option<String>)> {
        rs.iter()
            .map(|r| {
                serde_json::from_str::<Value>(r.get())
                    .ok()
                    .and_then(|v| event_identity(&v))
                    .map(|(i, id)| (i, Some(id)))
                    .unwrap_or((None, None))
            })
            .collect()
    };
    let new_ids = ids(&new);
    let old_ids = ids(&old);
    // A fresh list with another event at a cached index means the unit was
    // erased: the cached list is no longer true of it.
    let erased = new_ids.iter().any(|(i, id)| {
        old_ids
            .iter()
            .any(|(oi, oid)| oi.is_some() && oi == i && oid.is_some() && oid != id)
    });
    if erased {
        return fresh.clone();
    }
    let used: Vec<i64> = new_ids.iter().filter_map(|(i, _)| *i).collect();
    let known: Vec<&String> = new_ids.iter().filter_map(|(_, id)| id.as_ref()).collect();
    let keep: Vec<(i64, &RawValue)> = old_ids
        .into_iter()
        .zip(old.iter())
        .filter_map(|((i, id), r)| match (i, id) {
            (Some(i), Some(id)) if !used.contains(&i) && !known.contains(&&id) => Some((i, *r)),
            _ => None,
        })
        .collect();
    if keep.is_empty() {
        return fresh.clone();
    }
    let mut all: Vec<(i64, &RawValue)> = new_ids
        .iter()
        .zip(new.iter())
        .map(|((i, _), r)| (i.unwrap_or(i64::MAX), *r))
        .chain(keep)
        .collect();
    all.sort_by_key(|(i, _)| *i);
    let array = format!(
        "[{}]",
        all.iter()
            .map(|(_, r)| r.get())
            .collect::<Vec<_>>()
            .join(",")
    );
    let Ok(text) = std::str::from_utf8(fresh) else {
        return fresh.clone();
    };
    if text.trim_start().starts_with('[') {
        return Bytes::from(array);
    }
    // {"events": [...], ...}: replace the array, keep the other members.
    match serde_json::from_str::<serde_json::Map<String, Value>>(text) {
        Ok(mut m) => {
            if let Ok(v) = serde_json::from_str::<Value>(&array) {
                if let Some(n) = m.get("event_count").and_then(Value::as_i64) {
                    let len = v.as_array().map_or(0, |a| a.len() as i64);
                    m.insert("event_count".into(), Value::from(n.max(len)));
                }
                m.insert("events".into(), v);
            }
            serde_json::to_vec(&m)
                .map(Bytes::from)
                .unwrap_or_else(|_| fresh.clone())
        }
        Err(_) => fresh.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(i: i64, sec: i64) -> Value {
        json!({"index": i, "timestamp": {"year": 2026, "month": 4, "day": 9, "hour": 7, "minute": 0, "second": sec}, "peak_values": {"tran": 0.1}})
    }

    #[test]
    fn identities_prefer_the_waveform_key_then_index_and_timestamp() {
        assert_eq!(
            event_identity(&ev(3, 5)),
            Some((Some(3), "ev:3@2026-04-09T07:00:05".into()))
        );
        let mut e = ev(3, 5);
        e["waveform_key"] = json!("0x1A2B");
        assert_eq!(event_identity(&e), Some((Some(3), "wk:0x1A2B".into())));
        assert_eq!(event_identity(&json!({"index": 3})), None);
        let body = serde_json::to_vec(
            &json!({"index": 2, "timestamp": "2026-01-01T00:00:00", "raw_samples": {}}),
        )
        .unwrap();
        assert_eq!(
            body_identity(&body).as_deref(),
            Some("ev:2@2026-01-01T00:00:00")
        );
        assert_eq!(body_identity(b"{\"raw_samples\": {}}"), None);
    }

    #[test]
    fn facts_come_from_info_or_the_list_device_part() {
        let f = unit_facts(br#"{"serial":"BE11529","firmware":"S338.17","event_count":4}"#);
        assert_eq!(f.serial.as_deref(), Some("BE11529"));
        assert_eq!(f.firmware.as_deref(), Some("S338.17"));
        assert_eq!(f.event_count, Some(4));
        let f = unit_facts(br#"{"events":[],"device":{"serial":"X1","event_count":9}}"#);
        assert_eq!((f.serial.as_deref(), f.event_count), (Some("X1"), Some(9)));
        assert_eq!(unit_facts(b"not json"), UnitFacts::default());
    }

    #[test]
    fn a_fresh_list_links_new_events_and_unlinks_reused_indexes() {
        let known = vec![(0, "a".to_string()), (1, "b".to_string())];
        let fresh = vec![
            (0, "a".to_string()),
            (1, "c".to_string()),
            (2, "d".to_string()),
        ];
        let c = reconcile(&known, &fresh);
        assert_eq!(c.unlink, vec![1]);
        assert_eq!(c.links, vec![(1, "c".to_string()), (2, "d".to_string())]);
        assert_eq!(reconcile(&fresh, &fresh), IndexChange::default());
    }

    #[test]
    fn merge_keeps_the_fresh_body_verbatim_when_it_has_everything() {
        let old = serde_json::to_vec(&json!({"events": [ev(0, 1), ev(1, 2)]})).unwrap();
        let fresh = Bytes::from(
            r#"{"events": [ {"index":0,"timestamp":{"year":2026,"month":4,"day":9,"hour":7,"minute":0,"second":1}}, {"index":1,"timestamp":{"year":2026,"month":4,"day":9,"hour":7,"minute":0,"second":2}}, {"index":2,"timestamp":{"year":2026,"month":4,"day":9,"hour":7,"minute":0,"second":3}} ], "event_count": 3}"#,
        );
        assert_eq!(merge_lists(Some(&old), &fresh), fresh, "byte for byte");
        assert_eq!(merge_lists(None, &fresh), fresh);
    }

    #[test]
    fn merge_appends_what_an_incremental_list_left_out() {
        let old =
            serde_json::to_vec(&json!({"events": [ev(0, 1), ev(1, 2)], "event_count": 2})).unwrap();
        let fresh = Bytes::from(
            serde_json::to_vec(&json!({"events": [ev(2, 3)], "event_count": 3})).unwrap(),
        );
        let merged = merge_lists(Some(&old), &fresh);
        let ids = listed_events(&merged).unwrap();
        assert_eq!(
            ids.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let v: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(v["event_count"], 3);
        // Another event at a cached index (an erase): the old list is dropped.
        let fresh = Bytes::from(serde_json::to_vec(&json!([ev(0, 9)])).unwrap());
        assert_eq!(merge_lists(Some(&old), &fresh), fresh);
    }
}
