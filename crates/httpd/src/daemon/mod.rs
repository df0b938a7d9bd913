//! Daemon mode: `WSGIDaemonProcess` groups of processes that run the applications, to which Apache's
//! children hand requests.
//!
//! - [`options`]: the directive's options and mod_wsgi's defaults.
//! - [`wire`]: the framing of a request and its response over the group's UNIX socket.
//! - [`chroot`]: the paths a request names, as a daemon in a `chroot` sees them.
//! - [`client`]: the Apache child's side: connect, send the environ and body, relay the response.
//! - [`origin`]: each group's secret, which proves that a request comes from one of Apache's children.
//! - [`script_owner`]: `script-user`/`script-group`, checked before a request is handed over.
//! - [`process`]: a daemon process's life: its identity and limits, Python, the thread pool serving
//!   the socket, and its stop.
//!
//! Apache's parent forks the daemons and restarts them (`crate::ffi::daemons`, the unsafe part); it
//! publishes here, as a [`Plan`], what its children need to reach them.

pub(crate) mod chroot;
pub(crate) mod client;
pub(crate) mod options;
pub(crate) mod origin;
pub(crate) mod process;
pub(crate) mod script_owner;
pub(crate) mod wire;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub(crate) use options::DaemonGroup;

/// One group as it runs: its options, who its processes run as, and where its socket is.
#[derive(Debug, Clone)]
pub(crate) struct GroupPlan {
    pub(crate) group: DaemonGroup,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// The supplementary groups, resolved.
    pub(crate) groups: Vec<u32>,
    pub(crate) socket: PathBuf,
    /// Apache's `Timeout`, the socket timeout unless `socket-timeout` is given.
    pub(crate) apache_timeout: std::time::Duration,
    /// What every request to the group carries, to show it comes from one of Apache's children.
    pub(crate) secret: origin::Secret,
}

impl GroupPlan {
    pub(crate) fn socket_timeout(&self) -> std::time::Duration {
        self.group.socket_timeout.unwrap_or(self.apache_timeout)
    }
}

/// Every daemon group of this Apache generation (shared: each request of a group looks its group up).
pub(crate) type Plan = Vec<Arc<GroupPlan>>;

static PLAN: RwLock<Option<Arc<Plan>>> = RwLock::new(None);

/// Publishes the current generation's groups (in Apache's parent, before its children are forked).
pub(crate) fn publish(plan: Plan) {
    *PLAN.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(plan));
}

/// Forgets the groups of a generation that has ended.
pub(crate) fn unpublish() {
    *PLAN.write().unwrap_or_else(|p| p.into_inner()) = None;
}

/// The group called `name`, if this generation has one.
pub(crate) fn find(name: &str) -> Option<Arc<GroupPlan>> {
    let plan = PLAN.read().unwrap_or_else(|p| p.into_inner());
    plan.as_ref()?
        .iter()
        .find(|g| g.group.name == name)
        .cloned()
}

/// In a daemon process: forgets every other group's secret, so that its application cannot reach the
/// other groups' daemons (which may run as other users) with requests of its own making.
pub(crate) fn forget_other_secrets(own: &GroupPlan) {
    let plan = PLAN.read().unwrap_or_else(|p| p.into_inner());
    for other in plan.iter().flat_map(|plan| plan.iter()) {
        if other.group.name != own.group.name {
            other.secret.wipe();
        }
    }
}

/// A user's id from `name` or `#uid`, as mod_wsgi's options take it.
fn user_id(name: &str, what: &str) -> Result<u32, String> {
    if let Some(id) = name.strip_prefix('#') {
        return id
            .parse()
            .map_err(|_| format!("Invalid {what} id '{name}'"));
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => Err(format!("Unknown {what} '{name}'")),
    }
}

/// A group's id from `name` or `#gid`.
fn group_id(name: &str) -> Result<u32, String> {
    if let Some(id) = name.strip_prefix('#') {
        return id.parse().map_err(|_| format!("Invalid group id '{name}'"));
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        _ => Err(format!("Unknown group '{name}'")),
    }
}

/// Resolves who a group's processes run as: its `user`/`group` options, else Apache's own.
pub(crate) fn resolve_identity(
    group: &DaemonGroup,
    apache_uid: u32,
    apache_gid: u32,
) -> Result<(u32, u32, Vec<u32>), String> {
    let for_group = |err: String| format!("{err} for WSGI daemon process '{}'.", group.name);
    let uid = match &group.user {
        Some(name) => user_id(name, "user").map_err(for_group)?,
        None => apache_uid,
    };
    if uid == 0 && group.user.is_some() {
        return Err("WSGI process blocked from running as root.".into());
    }
    let gid = match &group.group {
        Some(name) => group_id(name).map_err(for_group)?,
        None => apache_gid,
    };
    let mut groups = vec![gid];
    for name in &group.supplementary_groups {
        groups.push(group_id(name).map_err(for_group)?);
    }
    Ok((uid, gid, groups))
}

/// The uid that owns a group's socket: `socket-user`, else Apache's `User`, whose children connect.
pub(crate) fn socket_owner(group: &DaemonGroup, apache_uid: u32) -> Result<u32, String> {
    match &group.socket_user {
        None => Ok(apache_uid),
        Some(name) => user_id(name, "socket user").map_err(|err| format!("{err}.")),
    }
}
