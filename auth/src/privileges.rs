//! Roles and privileges, as the seed describes them:
//! `user` reads the cache and catalog, runs simulations and writes cache entries;
//! `developer` also registers simulations, updates the catalog and invalidates the
//! cache; `admin` also manages users and administers the service. The `admin`
//! privilege implies every other one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Privilege {
    ReadCache = 1 << 0,
    WriteCache = 1 << 1,
    InvalidateCache = 1 << 2,
    ReadCatalog = 1 << 3,
    RegisterSimulation = 1 << 4,
    UpdateCatalog = 1 << 5,
    ExecuteSimulation = 1 << 6,
    ManageUsers = 1 << 7,
    Admin = 1 << 8,
    /// Read a seismograph's data through the shared SFM proxy.
    ReadSfm = 1 << 9,
    /// Write to a seismograph (config, monitoring, erase) through it.
    ControlSfm = 1 << 10,
    /// Read a system of record through the sidecar's cache, and run its functions.
    ReadSor = 1 << 11,
    /// Evict, invalidate and prefetch in the SOR cache.
    ManageSor = 1 << 12,
}

impl Privilege {
    pub const ALL: [Privilege; 13] = [
        Privilege::ReadCache,
        Privilege::WriteCache,
        Privilege::InvalidateCache,
        Privilege::ReadCatalog,
        Privilege::RegisterSimulation,
        Privilege::UpdateCatalog,
        Privilege::ExecuteSimulation,
        Privilege::ManageUsers,
        Privilege::Admin,
        Privilege::ReadSfm,
        Privilege::ControlSfm,
        Privilege::ReadSor,
        Privilege::ManageSor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Privilege::ReadCache => "read_cache",
            Privilege::WriteCache => "write_cache",
            Privilege::InvalidateCache => "invalidate_cache",
            Privilege::ReadCatalog => "read_catalog",
            Privilege::RegisterSimulation => "register_simulation",
            Privilege::UpdateCatalog => "update_catalog",
            Privilege::ExecuteSimulation => "execute_simulation",
            Privilege::ManageUsers => "manage_users",
            Privilege::Admin => "admin",
            Privilege::ReadSfm => "read_sfm",
            Privilege::ControlSfm => "control_sfm",
            Privilege::ReadSor => "read_sor",
            Privilege::ManageSor => "manage_sor",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Developer,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "developer" => Some(Role::Developer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }

    pub fn privileges(self) -> PrivilegeSet {
        use Privilege::*;
        let user = PrivilegeSet::of(&[
            ReadCache,
            WriteCache,
            ReadCatalog,
            ExecuteSimulation,
            ReadSfm,
            ReadSor,
        ]);
        let dev = user.with(&[
            RegisterSimulation,
            UpdateCatalog,
            InvalidateCache,
            ControlSfm,
            ManageSor,
        ]);
        match self {
            Role::User => user,
            Role::Developer => dev,
            Role::Admin => dev.with(&[ManageUsers, Admin]),
        }
    }
}

/// A set of privileges as a bit mask: checking one is a single AND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrivilegeSet(u16);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown privilege or role {0:?}; expected a role (user, developer, admin) or one of: {list}", list = privilege_list())]
pub struct UnknownPrivilege(pub String);

fn privilege_list() -> String {
    Privilege::ALL
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl PrivilegeSet {
    pub fn of(ps: &[Privilege]) -> Self {
        PrivilegeSet::default().with(ps)
    }

    pub fn with(self, ps: &[Privilege]) -> Self {
        PrivilegeSet(ps.iter().fold(self.0, |acc, p| acc | *p as u16))
    }

    pub fn union(self, other: PrivilegeSet) -> Self {
        PrivilegeSet(self.0 | other.0)
    }

    /// True when the set holds `p`, or holds `admin`.
    pub fn allows(self, p: Privilege) -> bool {
        self.0 & (p as u16 | Privilege::Admin as u16) != 0
    }

    /// True when every privilege of `other` is allowed by `self`.
    pub fn covers(self, other: PrivilegeSet) -> bool {
        self.allows(Privilege::Admin) || other.0 & !self.0 == 0
    }

    pub fn names(self) -> Vec<String> {
        Privilege::ALL
            .into_iter()
            .filter(|p| self.0 & *p as u16 != 0)
            .map(|p| p.name().to_string())
            .collect()
    }

    /// Expands names into a set: privilege names stand for themselves, role names
    /// for the role's privileges (the seed grants `privileges=['developer']`), and
    /// sim2l's own names (`read`, `write`, `catalog_update`, `execute`, `run`) for
    /// their nearest equivalents.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, UnknownPrivilege> {
        use Privilege::*;
        let mut set = PrivilegeSet::default();
        for name in names {
            let n = name.as_ref().trim();
            let add = if let Some(p) = Privilege::from_name(n) {
                PrivilegeSet::of(&[p])
            } else if let Some(r) = Role::parse(n) {
                r.privileges()
            } else {
                match n {
                    "read" => PrivilegeSet::of(&[ReadCache, ReadCatalog]),
                    "write" => PrivilegeSet::of(&[WriteCache]),
                    "catalog_update" => PrivilegeSet::of(&[UpdateCatalog, RegisterSimulation]),
                    "execute" | "run" => PrivilegeSet::of(&[ExecuteSimulation]),
                    _ => return Err(UnknownPrivilege(n.to_string())),
                }
            };
            set = set.union(add);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Privilege::*;

    #[test]
    fn roles_nest_as_the_seed_says() {
        let u = Role::User.privileges();
        assert!(u.allows(ReadCache) && u.allows(WriteCache) && u.allows(ExecuteSimulation));
        assert!(
            !u.allows(InvalidateCache) && !u.allows(RegisterSimulation) && !u.allows(ManageUsers)
        );
        let d = Role::Developer.privileges();
        assert!(
            d.allows(InvalidateCache) && d.allows(RegisterSimulation) && d.allows(UpdateCatalog)
        );
        assert!(!d.allows(ManageUsers) && !d.allows(Admin));
        let a = Role::Admin.privileges();
        assert!(Privilege::ALL.iter().all(|p| a.allows(*p)));
    }

    #[test]
    fn admin_privilege_implies_everything() {
        let s = PrivilegeSet::of(&[Admin]);
        assert!(Privilege::ALL.iter().all(|p| s.allows(*p)));
        assert!(s.covers(Role::Admin.privileges()));
    }

    #[test]
    fn role_names_and_sim2l_names_expand() {
        assert_eq!(
            PrivilegeSet::parse(&["developer"]).unwrap(),
            Role::Developer.privileges()
        );
        let s = PrivilegeSet::parse(&["read", "write"]).unwrap();
        assert!(s.allows(ReadCache) && s.allows(WriteCache) && !s.allows(InvalidateCache));
        let e = PrivilegeSet::parse(&["bogus"]).unwrap_err();
        assert!(e.to_string().contains("\"bogus\""), "{e}");
    }

    #[test]
    fn covers_is_subset() {
        let d = Role::Developer.privileges();
        assert!(d.covers(Role::User.privileges()));
        assert!(!Role::User.privileges().covers(d));
    }
}
