//! The catalog's free-text and tag search, in memory (sans I/O).
//!
//! sim2l matches query words as substrings of a simulation's name,
//! description and tags (`LIKE '%word%'`). A database answers that with a
//! trigram index, whose cost grows with how common the word's trigrams are:
//! tens of milliseconds for ordinary words in a 50,000-version catalog. Here
//! the search texts of all versions sit in one buffer, newest first, and a
//! SIMD substring search (`memchr::memmem`) walks it: a few milliseconds
//! whatever the word, and a common word stops as soon as a page is full.
//!
//! [`SearchIndex`] is an immutable snapshot at one catalog generation; a
//! [`Delta`] (the rows changed since) gives the next one. Fetching deltas is
//! the store's job (`super::CatalogStore`).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::ops::Range;

use memchr::memmem;

/// What search needs of one simulation version.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub id: i64,
    pub created_at_ms: i64,
    pub status: String,
    /// Lower-cased, as registered (name, description and tags).
    pub search_text: String,
    /// Lower-cased.
    pub tags: Vec<String>,
}

/// The changes after one generation, up to `generation`, of the database
/// `instance` (an id chosen when its catalog was created).
#[derive(Debug, Default)]
pub struct Delta {
    pub instance: String,
    pub generation: i64,
    /// Inserted or changed rows, with the generation of their change.
    pub upserts: Vec<(i64, IndexRow)>,
    /// Deleted ids, with the generation of the deletion.
    pub deletions: Vec<(i64, i64)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletions.is_empty()
    }
}

enum Change {
    Upsert(IndexRow),
    Delete(i64),
}

struct Entry {
    id: i64,
    created_at_ms: i64,
    status: String,
    tags: Vec<String>,
    text: Range<usize>,
}

/// One search: tokens as `tokenize` gives them, tags lower-cased.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub tokens: &'a [String],
    pub tags: &'a [String],
    pub status: Option<&'a str>,
    pub offset: usize,
    pub limit: usize,
}

/// Search texts never contain NUL (neither database stores it in text), so
/// it separates them and no word can match across two.
const SEPARATOR: u8 = 0;

/// All versions newest first (`created_at_ms`, then `id`, descending), as
/// the SQL search ordered them.
#[derive(Default)]
pub struct SearchIndex {
    /// The database it was built from; `None` for the empty start.
    instance: Option<String>,
    generation: i64,
    entries: Vec<Entry>,
    text: Vec<u8>,
}

impl SearchIndex {
    /// The generation this snapshot reflects; -1 for the empty start.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// Whether `delta` (asked for since this snapshot's generation) carries
    /// it forward. Not when it comes from another database (recreated) or
    /// from one behind this snapshot (restored from a backup): then the
    /// index must start over.
    pub fn continued_by(&self, delta: &Delta) -> bool {
        self.instance.as_deref().is_none_or(|i| i == delta.instance)
            && delta.generation >= self.generation
    }

    /// Whether the database is where this snapshot is: nothing to apply.
    pub fn is_current(&self, delta: &Delta) -> bool {
        self.instance.as_deref() == Some(delta.instance.as_str())
            && delta.generation == self.generation
            && delta.is_empty()
    }

    pub fn empty() -> Self {
        SearchIndex {
            generation: -1,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// An estimate of its heap bytes from its layout: the text buffer, the
    /// entries, and each entry's status and tags.
    pub fn heap_bytes(&self) -> usize {
        let per_entry: usize = self
            .entries
            .iter()
            .map(|e| {
                e.status.capacity()
                    + e.tags.capacity() * std::mem::size_of::<String>()
                    + e.tags.iter().map(String::capacity).sum::<usize>()
            })
            .sum();
        self.text.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>() + per_entry
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next snapshot: this one with `delta` applied. Changes are applied
    /// in generation order, so a row deleted after its last change is gone
    /// and one changed after a deletion (an id given again) is back.
    pub fn apply(&self, delta: Delta) -> SearchIndex {
        let mut rows: HashMap<i64, IndexRow> = self
            .entries
            .iter()
            .map(|e| {
                let row = IndexRow {
                    id: e.id,
                    created_at_ms: e.created_at_ms,
                    status: e.status.clone(),
                    search_text: String::from_utf8_lossy(&self.text[e.text.clone()]).into_owned(),
                    tags: e.tags.clone(),
                };
                (e.id, row)
            })
            .collect();
        let mut changes: Vec<(i64, Change)> = delta
            .upserts
            .into_iter()
            .map(|(g, r)| (g, Change::Upsert(r)))
            .chain(
                delta
                    .deletions
                    .into_iter()
                    .map(|(id, g)| (g, Change::Delete(id))),
            )
            .collect();
        changes.sort_by_key(|c| c.0);
        for (_, change) in changes {
            match change {
                Change::Upsert(r) => {
                    rows.insert(r.id, r);
                }
                Change::Delete(id) => {
                    rows.remove(&id);
                }
            }
        }
        let mut next = SearchIndex::build(delta.generation, rows.into_values().collect());
        next.instance = Some(delta.instance);
        next
    }

    /// A snapshot of exactly these rows.
    pub fn build(generation: i64, mut rows: Vec<IndexRow>) -> SearchIndex {
        rows.sort_by_key(|r| Reverse((r.created_at_ms, r.id)));
        let mut text = Vec::with_capacity(rows.iter().map(|r| r.search_text.len() + 1).sum());
        let entries = rows
            .into_iter()
            .map(|r| {
                let start = text.len();
                // A NUL inside a text (never stored) must not split it.
                text.extend(r.search_text.bytes().filter(|b| *b != SEPARATOR));
                let end = text.len();
                text.push(SEPARATOR);
                Entry {
                    id: r.id,
                    created_at_ms: r.created_at_ms,
                    status: r.status,
                    tags: r.tags,
                    text: start..end,
                }
            })
            .collect();
        SearchIndex {
            instance: None,
            generation,
            entries,
            text,
        }
    }

    /// The ids of one page of results, in sim2l's order: versions matching
    /// more of the words first, newest first among equals. Without words,
    /// newest first.
    pub fn search(&self, q: &Query) -> Vec<i64> {
        let want = q.offset.saturating_add(q.limit);
        let passes = |e: &Entry| {
            q.status.is_none_or(|s| e.status == s) && q.tags.iter().all(|t| e.tags.contains(t))
        };
        let page = |ids: Vec<usize>| -> Vec<i64> {
            ids.into_iter()
                .skip(q.offset)
                .take(q.limit)
                .map(|i| self.entries[i].id)
                .collect()
        };
        match q.tokens {
            [] => page(
                (0..self.entries.len())
                    .filter(|&i| passes(&self.entries[i]))
                    .take(want)
                    .collect(),
            ),
            // One word: matches come newest first; stop at a full page.
            [token] if token.as_bytes().contains(&SEPARATOR) => Vec::new(),
            [token] => page(
                self.matching(token)
                    .filter(|&i| passes(&self.entries[i]))
                    .take(want)
                    .collect(),
            ),
            tokens => {
                let mut score = vec![0u8; self.entries.len()];
                for t in tokens {
                    if t.as_bytes().contains(&SEPARATOR) {
                        continue;
                    }
                    for i in self.matching(t) {
                        score[i] = score[i].saturating_add(1);
                    }
                }
                let mut hits: Vec<usize> = (0..self.entries.len())
                    .filter(|&i| score[i] > 0 && passes(&self.entries[i]))
                    .collect();
                // Stable: newest first within a score.
                hits.sort_by_key(|&i| Reverse(score[i]));
                page(hits.into_iter().take(want).collect())
            }
        }
    }

    /// Positions of the entries containing `token`, newest first, each once.
    fn matching<'a>(&'a self, token: &'a str) -> impl Iterator<Item = usize> + 'a {
        let mut last: Option<usize> = None;
        let mut entry = 0usize;
        memmem::find_iter(&self.text, token.as_bytes()).filter_map(move |at| {
            // Matches come in text order, which is entry order: advance.
            while self.entries[entry].text.end < at {
                entry += 1;
            }
            if last == Some(entry) {
                None
            } else {
                last = Some(entry);
                Some(entry)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, text: &str, tags: &[&str]) -> IndexRow {
        IndexRow {
            id,
            created_at_ms: 1000 + id,
            status: "active".into(),
            search_text: text.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn words(q: &str) -> Vec<String> {
        q.split_whitespace().map(str::to_string).collect()
    }

    fn search(ix: &SearchIndex, q: &str, tags: &[&str], offset: usize, limit: usize) -> Vec<i64> {
        let tokens = words(q);
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        ix.search(&Query {
            tokens: &tokens,
            tags: &tags,
            status: Some("active"),
            offset,
            limit,
        })
    }

    fn catalog() -> SearchIndex {
        SearchIndex::build(
            7,
            vec![
                row(1, "heat-solver thermal conduction", &["heat"]),
                row(2, "beam elastic solid", &["solid"]),
                row(3, "thermal beam coupling", &["heat", "solid"]),
                row(4, "fluid flow", &[]),
                row(5, "thermal thermal thermal", &["heat"]),
            ],
        )
    }

    #[test]
    fn words_match_substrings_newest_first() {
        let ix = catalog();
        assert_eq!(search(&ix, "therm", &[], 0, 10), vec![5, 3, 1]);
        assert_eq!(search(&ix, "at-so", &[], 0, 10), vec![1], "across a hyphen");
        assert_eq!(search(&ix, "nothing", &[], 0, 10), Vec::<i64>::new());
        // The end of one text and the start of the next are not one string.
        assert_eq!(search(&ix, "flowthermal", &[], 0, 10), Vec::<i64>::new());
        assert_eq!(search(&ix, "solidfluid", &[], 0, 10), Vec::<i64>::new());
    }

    #[test]
    fn more_words_rank_first_then_newest() {
        let ix = catalog();
        assert_eq!(search(&ix, "thermal beam", &[], 0, 10), vec![3, 5, 2, 1]);
        assert_eq!(search(&ix, "thermal beam", &[], 1, 2), vec![5, 2]);
        assert_eq!(
            search(&ix, "fluid elastic conduction", &[], 0, 10),
            vec![4, 2, 1]
        );
    }

    #[test]
    fn tags_are_all_of_and_status_filters() {
        let mut ix = catalog();
        assert_eq!(search(&ix, "", &["heat"], 0, 10), vec![5, 3, 1]);
        assert_eq!(search(&ix, "", &["heat", "solid"], 0, 10), vec![3]);
        assert_eq!(search(&ix, "beam", &["heat"], 0, 10), vec![3]);
        assert_eq!(search(&ix, "", &[], 1, 2), vec![4, 3]);
        ix = ix.apply(Delta {
            instance: "db".into(),
            generation: 8,
            upserts: vec![(
                8,
                IndexRow {
                    status: "deprecated".into(),
                    ..row(5, "thermal thermal thermal", &["heat"])
                },
            )],
            deletions: vec![],
        });
        assert_eq!(search(&ix, "", &["heat"], 0, 10), vec![3, 1]);
        let any = ix.search(&Query {
            tokens: &[],
            tags: &[],
            status: None,
            offset: 0,
            limit: 10,
        });
        assert_eq!(any, vec![5, 4, 3, 2, 1]);
    }

    #[test]
    fn deltas_apply_in_generation_order() {
        let ix = catalog().apply(Delta {
            instance: "db".into(),
            generation: 12,
            upserts: vec![
                (9, row(6, "new thermal model", &[])),
                (11, row(2, "beam elastic solid thermal", &["solid"])),
                (12, row(4, "fluid flow again", &[])),
            ],
            // 4 was deleted before it was given again; 1 is gone.
            deletions: vec![(4, 10), (1, 8)],
        });
        assert_eq!(ix.generation(), 12);
        assert_eq!(ix.len(), 5);
        assert_eq!(search(&ix, "thermal", &[], 0, 10), vec![6, 5, 3, 2]);
        assert_eq!(search(&ix, "again", &[], 0, 10), vec![4]);
        let gone = ix.apply(Delta {
            instance: "db".into(),
            generation: 13,
            upserts: vec![],
            deletions: vec![(6, 13)],
        });
        assert_eq!(search(&gone, "thermal", &[], 0, 10), vec![5, 3, 2]);
    }

    #[test]
    fn a_nul_in_a_word_matches_nothing() {
        let ix = catalog();
        assert_eq!(search(&ix, "flow\0thermal", &[], 0, 10), Vec::<i64>::new());
        let tokens = vec!["fl\0".to_string(), "beam".to_string()];
        let got = ix.search(&Query {
            tokens: &tokens,
            tags: &[],
            status: None,
            offset: 0,
            limit: 10,
        });
        assert_eq!(got, vec![3, 2]);
    }

    /// On a catalog of 30,000 versions, the ranking and the page are what a
    /// plain check of every text gives.
    #[test]
    fn a_large_catalog_ranks_as_a_plain_check_does() {
        let rocks = ["quartz", "basalt", "gneiss", "schist", "marble", "shale"];
        let rows: Vec<IndexRow> = (0..30_000i64)
            .map(|i| {
                let w = |k: i64| rocks[((i * 7 + k * 13) % 6) as usize];
                let text = format!("model-{i} {} {} survey of layer {}", w(1), w(i % 5), i % 97);
                row(i, &text, &[])
            })
            .collect();
        let ix = SearchIndex::build(1, rows.clone());
        for q in ["quartz shale", "basalt layer 42", "marble gneiss schist"] {
            let tokens = words(q);
            let mut want: Vec<(usize, i64)> = rows
                .iter()
                .map(|r| {
                    (
                        tokens
                            .iter()
                            .filter(|t| r.search_text.contains(t.as_str()))
                            .count(),
                        r.id,
                    )
                })
                .filter(|(n, _)| *n > 0)
                .collect();
            want.sort_by_key(|&(n, id)| (Reverse(n), Reverse(id)));
            let want: Vec<i64> = want
                .into_iter()
                .skip(5)
                .take(40)
                .map(|(_, id)| id)
                .collect();
            assert_eq!(search(&ix, q, &[], 5, 40), want, "{q}");
        }
    }

    #[test]
    fn a_delta_from_another_or_an_older_database_does_not_continue_the_index() {
        let delta = |instance: &str, generation| Delta {
            instance: instance.into(),
            generation,
            ..Default::default()
        };
        let start = SearchIndex::empty();
        assert!(start.continued_by(&delta("a", 0)));
        assert!(
            !start.is_current(&delta("a", -1)),
            "the start is never current"
        );
        let ix = start.apply(delta("a", 5));
        assert!(ix.is_current(&delta("a", 5)));
        assert!(ix.continued_by(&delta("a", 7)));
        assert!(!ix.is_current(&delta("a", 7)));
        assert!(!ix.continued_by(&delta("b", 5)), "recreated");
        assert!(!ix.is_current(&delta("b", 5)));
        assert!(!ix.continued_by(&delta("a", 3)), "restored from a backup");
    }
}
