//! The catalog search index costs what `heap_bytes` says (what
//! `simcache_catalog_index_bytes` exports), within 25 %: the heap a
//! 50,000-version index holds, counted by the allocator itself, against its
//! estimate. (Alone in this test binary, with a counting allocator.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure
#![allow(unsafe_code)] // a counting allocator is unsafe by nature

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use simcache_store::catalog::{IndexRow, SearchIndex};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn the_index_costs_what_it_reports() {
    let rows: Vec<IndexRow> = (0..50_000)
        .map(|i| IndexRow {
            id: i,
            created_at_ms: 1_700_000_000_000 + i,
            status: "active".into(),
            search_text: format!(
                "thermal-{i} 1.0.{i} thermal stress in a steel bar under load, model {i} heat mechanics"
            ),
            tags: vec!["heat".into(), "mechanics".into()],
        })
        .collect();
    let index = SearchIndex::build(1, rows);
    let with = LIVE.load(Ordering::Relaxed);
    let reported = index.heap_bytes();
    let len = index.len();
    drop(index);
    let held = with - LIVE.load(Ordering::Relaxed);
    let ratio = held as f64 / reported as f64;
    eprintln!("{len} versions: reported {reported} bytes, the heap held {held} ({ratio:.2}x)");
    assert!(
        (0.75..=1.25).contains(&ratio),
        "reported {reported}, held {held}"
    );
}
