//! The file manager's folder hierarchy (sim2l's `FileManager`): folders and
//! file entries that point at a URI. Folder `"0"` is the root.

use serde::Serialize;
use serde_json::Value;

use crate::clock::now_ms;
use crate::error::{Result, StoreError};
use crate::sql::{DbRow, Sql, Stmt};

pub const ROOT: &str = "0";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileObject {
    pub id: String,
    pub name: String,
    pub is_folder: bool,
    pub parent_id: String,
    pub uri: Option<String>,
    pub size: Option<i64>,
    pub creator: Option<String>,
    pub metadata: Option<Value>,
    /// POSIX seconds, as sim2l's objects carry them.
    pub date_created: f64,
    pub date_modified: f64,
}

/// `YYYYmm-ddHH-MMSS-` + a random UUID, the shape sim2l's ids have.
fn new_id() -> Result<String> {
    let mut b = crate::random::bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    let t = time::OffsetDateTime::now_utc();
    Ok(format!(
        "{:04}{:02}-{:02}{:02}-{:02}{:02}-{}-{}-{}-{}-{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(StoreError::Invalid(format!(
            "name {name:?} must be 1 to 255 characters without '/' or control characters"
        )));
    }
    Ok(())
}

const COLUMNS: &str = "id, name, is_folder, parent_id, uri, size_bytes, creator, metadata, created_at_ms, modified_at_ms";

fn from_row(r: &DbRow) -> FileObject {
    FileObject {
        id: r.text(0).unwrap_or_default(),
        name: r.text(1).unwrap_or_default(),
        is_folder: r.bool(2).unwrap_or(false),
        parent_id: r.text(3).unwrap_or_else(|| ROOT.into()),
        uri: r.text(4),
        size: r.i64(5),
        creator: r.text(6),
        metadata: r.json(7),
        date_created: r.i64(8).unwrap_or(0) as f64 / 1000.0,
        date_modified: r.i64(9).unwrap_or(0) as f64 / 1000.0,
    }
}

#[derive(Clone)]
pub struct FileStore {
    sql: Sql,
}

/// What a new entry is.
pub struct NewEntry<'a> {
    pub name: &'a str,
    pub parent_id: &'a str,
    pub is_folder: bool,
    pub uri: Option<&'a str>,
    pub size: Option<i64>,
    pub creator: Option<&'a str>,
    pub metadata: Option<&'a Value>,
}

impl FileStore {
    pub fn new(sql: Sql) -> Self {
        FileStore { sql }
    }

    pub async fn get(&self, id: &str) -> Result<Option<FileObject>> {
        let rows = self
            .sql
            .query(
                &format!("SELECT {COLUMNS} FROM file_objects WHERE id = $1"),
                vec![id.into()],
            )
            .await?;
        Ok(rows.first().map(from_row))
    }

    /// Creates a folder or file entry under an existing folder.
    pub async fn create(&self, e: &NewEntry<'_>) -> Result<FileObject> {
        check_name(e.name)?;
        if !e.is_folder && e.uri.is_none_or(str::is_empty) {
            return Err(StoreError::Invalid("a file entry needs a uri".into()));
        }
        if e.parent_id != ROOT {
            match self.get(e.parent_id).await? {
                None => {
                    return Err(StoreError::NotFound(format!(
                        "parent folder {:?} not found",
                        e.parent_id
                    )));
                }
                Some(p) if !p.is_folder => {
                    return Err(StoreError::Invalid(format!(
                        "parent {:?} is a file, not a folder",
                        e.parent_id
                    )));
                }
                Some(_) => {}
            }
        }
        let id = new_id()?;
        let now = now_ms();
        self.sql
            .script(vec![Stmt::new(
                "INSERT INTO file_objects (id, name, is_folder, parent_id, uri, size_bytes, creator, metadata,
                    created_at_ms, modified_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                vec![
                    id.as_str().into(),
                    e.name.into(),
                    e.is_folder.into(),
                    e.parent_id.into(),
                    e.uri.map(str::to_string).into(),
                    e.size.into(),
                    e.creator.map(str::to_string).into(),
                    e.metadata.map(Value::to_string).into(),
                    now.into(),
                ],
            )])
            .await?;
        self.get(&id)
            .await?
            .ok_or_else(|| StoreError::Database("created entry vanished".into()))
    }

    /// The entries of a folder, folders first then by name.
    pub async fn list(&self, folder_id: &str) -> Result<Vec<FileObject>> {
        if folder_id != ROOT {
            match self.get(folder_id).await? {
                None => {
                    return Err(StoreError::NotFound(format!(
                        "folder {folder_id:?} not found"
                    )));
                }
                Some(f) if !f.is_folder => {
                    return Err(StoreError::Invalid(format!(
                        "{folder_id:?} is a file, not a folder"
                    )));
                }
                Some(_) => {}
            }
        }
        let rows = self
            .sql
            .query(
                &format!("SELECT {COLUMNS} FROM file_objects WHERE parent_id = $1 ORDER BY is_folder DESC, name, id"),
                vec![folder_id.into()],
            )
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// Deletes an entry; a non-empty folder only when `recursive`.
    pub async fn delete(&self, id: &str, recursive: bool) -> Result<usize> {
        let Some(obj) = self.get(id).await? else {
            return Err(StoreError::NotFound(format!("{id:?} not found")));
        };
        // Collect the subtree breadth-first, then delete it in one transaction.
        let mut doomed = vec![obj.id.clone()];
        let mut frontier = vec![obj.id.clone()];
        while let Some(f) = frontier.pop() {
            for child in self.list_raw(&f).await? {
                if !recursive {
                    return Err(StoreError::Conflict(format!(
                        "folder {id:?} is not empty; delete recursively"
                    )));
                }
                frontier.push(child.clone());
                doomed.push(child);
            }
        }
        let script = doomed
            .iter()
            .map(|d| {
                Stmt::new(
                    "DELETE FROM file_objects WHERE id = $1",
                    vec![d.as_str().into()],
                )
            })
            .collect();
        self.sql.script(script).await?;
        Ok(doomed.len())
    }

    async fn list_raw(&self, parent: &str) -> Result<Vec<String>> {
        let rows = self
            .sql
            .query(
                "SELECT id FROM file_objects WHERE parent_id = $1",
                vec![parent.into()],
            )
            .await?;
        Ok(rows.iter().filter_map(|r| r.text(0)).collect())
    }
}
