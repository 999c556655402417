//! A small, stateful fake of the Kubernetes API server for the tests: a real HTTP/1.1
//! server on 127.0.0.1 that the real `kube` client (inside `firedrill`) talks to.
//!
//! No API server can run on this machine (no binaries or images can be fetched), and
//! static stubs cannot answer a watch or replace a pod, so this keeps real state:
//! - workloads (Deployments, each with one ReplicaSet that owns its pods, and
//!   StatefulSets that own theirs), with `spec.replicas` and a computed `status`;
//! - pods, listed with label and field selectors, with a `resourceVersion` that
//!   grows with every change, fetched, deleted with a grace period (a positive one
//!   leaves the pod terminating for that long), and watched: a chunked stream of
//!   JSON lines from a resourceVersion, filtered like the list;
//! - the `scale` subresource (get, merge patch, put) and merge patches of the
//!   workload itself (annotations);
//! - SelfSubjectAccessReview, allowed unless the test denies a verb/resource;
//! - a controller: a pod that is deleted (or found missing after a scale-up) is
//!   replaced `recreate_delay` after the delete request by a pod with a new UID and
//!   the same owner, already scheduled on a node but not Ready; it becomes Running
//!   and Ready `ready_delay` later. A workload can be told never to replace pods.
//!
//! Every request and every delete is logged, so a test can prove that nothing was
//! deleted (a denied permission) or which grace period was asked for.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The kinds of workload the fake keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    StatefulSet,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
        }
    }
}

/// A workload to create at start.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub namespace: String,
    pub kind: Kind,
    pub name: String,
    pub replicas: u32,
    /// Labels of its pods (also its selector).
    pub labels: BTreeMap<String, String>,
    /// Whether the controller replaces deleted pods.
    pub recreate: bool,
}

impl WorkloadSpec {
    /// A Deployment `name` in `ns` whose pods carry `app=<name>`.
    pub fn deployment(ns: &str, name: &str, replicas: u32) -> WorkloadSpec {
        WorkloadSpec {
            namespace: ns.into(),
            kind: Kind::Deployment,
            name: name.into(),
            replicas,
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            recreate: true,
        }
    }
    pub fn statefulset(ns: &str, name: &str, replicas: u32) -> WorkloadSpec {
        WorkloadSpec {
            kind: Kind::StatefulSet,
            ..WorkloadSpec::deployment(ns, name, replicas)
        }
    }
    /// Deleted pods are never replaced (a broken controller, a quota).
    pub fn no_recreate(mut self) -> WorkloadSpec {
        self.recreate = false;
        self
    }
}

/// Timing of the fake controller.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// From a delete request (or a scale-up) to the replacement pod being created,
    /// already scheduled.
    pub recreate_delay: Duration,
    /// From the replacement's creation to it being Running and Ready.
    pub ready_delay: Duration,
    /// `terminationGracePeriodSeconds` of every pod: the grace of a delete that does
    /// not give one.
    pub pod_grace_s: i64,
    pub workloads: Vec<WorkloadSpec>,
    /// Extra pods with no owner (`namespace`, `name`, labels).
    pub bare_pods: Vec<(String, String, BTreeMap<String, String>)>,
    /// Ends every watch after this long, whatever its `timeoutSeconds` (as an API
    /// server or a proxy in between may): clients must watch again.
    pub watch_cap: Option<Duration>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            recreate_delay: Duration::from_millis(300),
            ready_delay: Duration::from_millis(400),
            pod_grace_s: 0,
            workloads: Vec::new(),
            bare_pods: Vec::new(),
            watch_cap: None,
        }
    }
}

/// One delete request the fake received.
#[derive(Clone, Debug)]
pub struct DeleteRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `gracePeriodSeconds` of the request's DeleteOptions, if it gave one.
    pub grace: Option<i64>,
    pub at: Instant,
}

/// One SelfSubjectAccessReview the fake answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub allowed: bool,
}

struct Workload {
    spec: WorkloadSpec,
    uid: String,
    /// Name and uid of the ReplicaSet that owns a Deployment's pods.
    rs: Option<(String, String)>,
    annotations: BTreeMap<String, String>,
    /// Pod creations scheduled and not yet done.
    pending: u32,
    created: u32,
}

struct State {
    rv: u64,
    uid_seq: u64,
    pods: BTreeMap<(String, String), Value>,
    workloads: BTreeMap<(String, Kind, String), Workload>,
    /// Every pod change: (resourceVersion, type, object).
    events: Vec<(u64, &'static str, Value)>,
    deletes: Vec<DeleteRecord>,
    reviews: Vec<Review>,
    /// (verb, resource[/subresource], namespace) denied by SelfSubjectAccessReview;
    /// `*` matches any namespace.
    denied: Vec<(String, String, String)>,
    requests: Vec<String>,
    config: FakeConfig,
    /// When each pod became Ready (by uid), for the tests' own reckoning.
    ready_at: BTreeMap<String, Instant>,
    /// How many watches were opened.
    watches: u32,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
    rt: tokio::runtime::Handle,
}

/// A running fake API server; stopped when dropped.
pub struct FakeK8s {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl FakeK8s {
    /// Starts the server on a free port of 127.0.0.1, with its own runtime thread.
    pub fn start(config: FakeConfig) -> FakeK8s {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let shared = Arc::new(Shared {
                    state: Mutex::new(State::new(config)),
                    changed: Notify::new(),
                    rt: tokio::runtime::Handle::current(),
                });
                shared.seed();
                tx.send((listener.local_addr().unwrap(), shared.clone()))
                    .unwrap();
                let serve = async {
                    loop {
                        let Ok((sock, _)) = listener.accept().await else {
                            continue;
                        };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let _ = serve_conn(sock, shared).await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        let (addr, shared) = rx.recv().unwrap();
        FakeK8s {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes a kubeconfig whose context `fake` points at this server (plain http).
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: default\ncurrent-context: fake\nusers:\n- name: tester\n  user: {{}}\n",
            self.addr
        );
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    }

    /// Denies `verb` on `resource` (`pods`, `deployments/scale`, ...) in `namespace`
    /// (`*`: every namespace) to SelfSubjectAccessReview.
    pub fn deny(&self, verb: &str, resource: &str, namespace: &str) {
        self.shared.state.lock().unwrap().denied.push((
            verb.into(),
            resource.into(),
            namespace.into(),
        ));
    }

    /// The pods now, as JSON objects, by name, in `ns`.
    pub fn pods(&self, ns: &str) -> Vec<Value> {
        let st = self.shared.state.lock().unwrap();
        st.pods
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// (name, uid) of the pods of `ns` that are Running, Ready and not terminating.
    pub fn ready_pods(&self, ns: &str) -> Vec<(String, String)> {
        self.pods(ns)
            .iter()
            .filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| (name_of(p), uid_of(p)))
            .collect()
    }

    /// How many watches were opened.
    pub fn watches(&self) -> u32 {
        self.shared.state.lock().unwrap().watches
    }

    pub fn deletes(&self) -> Vec<DeleteRecord> {
        self.shared.state.lock().unwrap().deletes.clone()
    }

    pub fn reviews(&self) -> Vec<Review> {
        self.shared.state.lock().unwrap().reviews.clone()
    }

    /// Every request line received (`METHOD path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// `spec.replicas` and the annotations of a workload.
    pub fn workload(&self, ns: &str, kind: Kind, name: &str) -> (u32, BTreeMap<String, String>) {
        let st = self.shared.state.lock().unwrap();
        let w = &st.workloads[&(ns.to_string(), kind, name.to_string())];
        (w.spec.replicas, w.annotations.clone())
    }

    /// Waits (blocking) until `f` holds for the state's pods of `ns`, or `timeout`.
    pub fn wait_pods(&self, ns: &str, timeout: Duration, f: impl Fn(&[Value]) -> bool) -> bool {
        super::wait_until(timeout, || f(&self.pods(ns)))
    }

    /// When the pod with `uid` became Ready, if it did.
    pub fn ready_at(&self, uid: &str) -> Option<Instant> {
        self.shared.state.lock().unwrap().ready_at.get(uid).copied()
    }
}

impl Drop for FakeK8s {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn name_of(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn uid_of(p: &Value) -> String {
    p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn is_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl State {
    fn new(config: FakeConfig) -> State {
        State {
            rv: 100,
            uid_seq: 0,
            pods: BTreeMap::new(),
            workloads: BTreeMap::new(),
            events: Vec::new(),
            deletes: Vec::new(),
            reviews: Vec::new(),
            denied: Vec::new(),
            requests: Vec::new(),
            config,
            ready_at: BTreeMap::new(),
            watches: 0,
        }
    }

    fn uid(&mut self) -> String {
        self.uid_seq += 1;
        format!("00000000-0000-4000-8000-{:012}", self.uid_seq)
    }

    /// Records a pod change under a new resourceVersion.
    fn pod_event(&mut self, kind: &'static str, ns: &str, name: &str, mut pod: Value) {
        self.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if kind == "DELETED" {
            self.pods.remove(&(ns.to_string(), name.to_string()));
        } else {
            self.pods
                .insert((ns.to_string(), name.to_string()), pod.clone());
        }
        self.events.push((self.rv, kind, pod));
    }

    /// A new pod of workload `key`, scheduled on a node; Ready when `ready`.
    fn new_pod(&mut self, key: &(String, Kind, String), ready: bool) -> (String, Value) {
        let uid = self.uid();
        let grace = self.config.pod_grace_s;
        let w = self.workloads.get_mut(key).unwrap();
        w.created += 1;
        let (owner_kind, owner_name, owner_uid) = match &w.rs {
            Some((n, u)) => ("ReplicaSet", n.clone(), u.clone()),
            None => (w.spec.kind.name(), w.spec.name.clone(), w.uid.clone()),
        };
        let name = match w.spec.kind {
            Kind::Deployment => format!("{owner_name}-{:05x}", 0x1000 + w.created * 7919 % 0xeff),
            Kind::StatefulSet => {
                // The lowest ordinal not in use, as a StatefulSet names its pods.
                let ns = key.0.clone();
                let base = w.spec.name.clone();
                let mut i = 0;
                while self.pods.contains_key(&(ns.clone(), format!("{base}-{i}"))) {
                    i += 1;
                }
                format!("{base}-{i}")
            }
        };
        let w = self.workloads.get(key).unwrap();
        let node = format!("node-{}", w.created % 3 + 1);
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": key.0,
                "uid": uid,
                "labels": w.spec.labels,
                "creationTimestamp": now_rfc3339(),
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name,
                    "uid": owner_uid, "controller": true, "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": grace,
                "containers": [{ "name": "main", "image": "example/app:1" }]
            },
            "status": pod_status(ready, 0)
        });
        (name, pod)
    }

    /// Pods of workload `key` that are not terminating.
    fn live_pods(&self, key: &(String, Kind, String)) -> Vec<String> {
        let w = &self.workloads[key];
        let owner_uid = w.rs.as_ref().map_or(w.uid.clone(), |r| r.1.clone());
        self.pods
            .iter()
            .filter(|((ns, _), p)| {
                *ns == key.0
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && p["metadata"]["ownerReferences"][0]["uid"] == owner_uid.as_str()
            })
            .map(|((_, n), _)| n.clone())
            .collect()
    }

    fn ready_count(&self, key: &(String, Kind, String)) -> usize {
        self.live_pods(key)
            .iter()
            .filter(|n| is_ready(&self.pods[&(key.0.clone(), (*n).clone())]))
            .count()
    }

    fn workload_json(&self, key: &(String, Kind, String)) -> Value {
        let w = &self.workloads[key];
        let live = self.live_pods(key).len();
        let ready = self.ready_count(key);
        json!({
            "apiVersion": "apps/v1",
            "kind": w.spec.kind.name(),
            "metadata": {
                "name": w.spec.name, "namespace": key.0, "uid": w.uid,
                "resourceVersion": self.rv.to_string(),
                "annotations": w.annotations,
                "labels": w.spec.labels,
            },
            "spec": {
                "replicas": w.spec.replicas,
                "selector": { "matchLabels": w.spec.labels },
                "serviceName": w.spec.name,
                "template": {
                    "metadata": { "labels": w.spec.labels },
                    "spec": { "containers": [{ "name": "main", "image": "example/app:1" }] }
                }
            },
            "status": {
                "replicas": live, "readyReplicas": ready, "availableReplicas": ready,
                "updatedReplicas": live, "observedGeneration": 1
            }
        })
    }

    fn scale_json(&self, key: &(String, Kind, String)) -> Value {
        let w = &self.workloads[key];
        json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": { "name": w.spec.name, "namespace": key.0, "uid": w.uid,
                          "resourceVersion": self.rv.to_string() },
            "spec": { "replicas": w.spec.replicas },
            "status": { "replicas": self.live_pods(key).len(),
                        "selector": selector_string(&w.spec.labels) }
        })
    }
}

fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn pod_status(ready: bool, restarts: u32) -> Value {
    let t = if ready { "True" } else { "False" };
    json!({
        "phase": if ready { "Running" } else { "Pending" },
        "conditions": [
            { "type": "PodScheduled", "status": "True" },
            { "type": "Ready", "status": t },
            { "type": "ContainersReady", "status": t }
        ],
        "containerStatuses": [{
            "name": "main", "ready": ready, "restartCount": restarts,
            "image": "example/app:1", "imageID": "", "started": ready
        }]
    })
}

impl Shared {
    /// Creates the configured workloads with all their pods Running and Ready.
    fn seed(self: &Arc<Self>) {
        let mut st = self.state.lock().unwrap();
        for spec in st.config.workloads.clone() {
            let key = (spec.namespace.clone(), spec.kind, spec.name.clone());
            let uid = st.uid();
            let rs = (spec.kind == Kind::Deployment).then(|| {
                let u = st.uid();
                (format!("{}-7d9f8b6c5", spec.name), u)
            });
            st.workloads.insert(
                key.clone(),
                Workload {
                    spec: spec.clone(),
                    uid,
                    rs,
                    annotations: BTreeMap::new(),
                    pending: 0,
                    created: 0,
                },
            );
            for _ in 0..spec.replicas {
                let (name, pod) = st.new_pod(&key, true);
                st.pod_event("ADDED", &key.0, &name, pod);
            }
        }
        for (ns, name, labels) in st.config.bare_pods.clone() {
            let uid = st.uid();
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": name, "namespace": ns, "uid": uid, "labels": labels,
                              "creationTimestamp": now_rfc3339() },
                "spec": { "nodeName": "node-1", "terminationGracePeriodSeconds": 0,
                          "containers": [{ "name": "main", "image": "example/app:1" }] },
                "status": pod_status(true, 0)
            });
            st.pod_event("ADDED", &ns, &name, pod);
        }
    }

    /// The controller: brings each workload's live pods to its replicas, deleting
    /// extras at once and creating the missing ones after `recreate_delay`.
    fn reconcile(self: &Arc<Self>, st: &mut State) {
        let keys: Vec<_> = st.workloads.keys().cloned().collect();
        for key in keys {
            let live = st.live_pods(&key);
            let w = &st.workloads[&key];
            let want = w.spec.replicas as usize;
            let have = live.len() + w.pending as usize;
            if have < want && w.spec.recreate {
                let missing = (want - have) as u32;
                st.workloads.get_mut(&key).unwrap().pending += missing;
                let delays = (st.config.recreate_delay, st.config.ready_delay);
                for _ in 0..missing {
                    self.schedule_create(key.clone(), delays);
                }
            } else if live.len() > want {
                // Newest first, as a ReplicaSet scales down (by name here).
                let mut extra = live;
                extra.sort();
                for name in extra.into_iter().skip(want) {
                    let pod = st.pods[&(key.0.clone(), name.clone())].clone();
                    st.pod_event("DELETED", &key.0, &name, pod);
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Creates a pod of `key` after the first delay, Ready after the second. Called
    /// with the state locked: takes the delays rather than the lock.
    fn schedule_create(
        self: &Arc<Self>,
        key: (String, Kind, String),
        (recreate, ready): (Duration, Duration),
    ) {
        let me = self.clone();
        self.rt.spawn(async move {
            tokio::time::sleep(recreate).await;
            let (name, uid) = {
                let mut st = me.state.lock().unwrap();
                let w = st.workloads.get_mut(&key).unwrap();
                w.pending = w.pending.saturating_sub(1);
                if st.live_pods(&key).len() >= st.workloads[&key].spec.replicas as usize {
                    return; // scaled down meanwhile
                }
                let (name, pod) = st.new_pod(&key, false);
                let uid = uid_of(&pod);
                st.pod_event("ADDED", &key.0, &name, pod);
                (name, uid)
            };
            me.changed.notify_waiters();
            tokio::time::sleep(ready).await;
            let mut st = me.state.lock().unwrap();
            if let Some(pod) = st.pods.get(&(key.0.clone(), name.clone())).cloned()
                && uid_of(&pod) == uid
            {
                let mut pod = pod;
                pod["status"] = pod_status(true, 0);
                st.pod_event("MODIFIED", &key.0, &name, pod);
                st.ready_at.insert(uid, Instant::now());
            }
            drop(st);
            me.changed.notify_waiters();
        });
    }

    /// Deletes a pod: at once with a grace of 0, else marked terminating and removed
    /// after the grace. The controller sees it gone from its count at once.
    fn delete_pod(self: &Arc<Self>, ns: &str, name: &str, body: &Value) -> Result<Value, Resp> {
        let mut st = self.state.lock().unwrap();
        let Some(pod) = st.pods.get(&(ns.to_string(), name.to_string())).cloned() else {
            return Err(not_found("pods", name));
        };
        if let Some(want) = body["preconditions"]["uid"].as_str()
            && want != uid_of(&pod)
        {
            return Err(status(
                409,
                "Conflict",
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {}",
                    uid_of(&pod)
                ),
            ));
        }
        let asked = body["gracePeriodSeconds"].as_i64();
        st.deletes.push(DeleteRecord {
            namespace: ns.into(),
            name: name.into(),
            uid: uid_of(&pod),
            grace: asked,
            at: Instant::now(),
        });
        let grace = asked.unwrap_or(
            pod["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30),
        );
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return Ok(pod);
        }
        if grace <= 0 {
            st.pod_event("DELETED", ns, name, pod.clone());
        } else {
            let mut p = pod.clone();
            p["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            st.pod_event("MODIFIED", ns, name, p);
            let me = self.clone();
            let (ns, name, uid) = (ns.to_string(), name.to_string(), uid_of(&pod));
            self.rt.spawn(async move {
                tokio::time::sleep(Duration::from_secs(grace as u64)).await;
                let mut st = me.state.lock().unwrap();
                if let Some(p) = st.pods.get(&(ns.clone(), name.clone())).cloned()
                    && uid_of(&p) == uid
                {
                    st.pod_event("DELETED", &ns, &name, p);
                }
                drop(st);
                me.changed.notify_waiters();
            });
        }
        self.reconcile(&mut st);
        Ok(pod)
    }
}

// ---- selectors ------------------------------------------------------------

/// Whether `labels` satisfy a label selector (`a=b`, `a==b`, `a!=b`, `a`, `!a`,
/// `a in (x,y)`, `a notin (x,y)`).
pub fn label_match(sel: &str, labels: &Value) -> bool {
    split_top(sel).iter().all(|req| {
        let req = req.trim();
        if req.is_empty() {
            return true;
        }
        let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        if let Some((k, rest)) = req.split_once(" notin ") {
            let set = parse_set(rest);
            return get(k).is_none_or(|v| !set.contains(v));
        }
        if let Some((k, rest)) = req.split_once(" in ") {
            let set = parse_set(rest);
            return get(k).is_some_and(|v| set.contains(v));
        }
        if let Some((k, v)) = req.split_once("!=") {
            return get(k) != Some(v.trim());
        }
        if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            return get(k) == Some(v.trim());
        }
        if let Some(k) = req.strip_prefix('!') {
            return get(k).is_none();
        }
        get(req).is_some()
    })
}

fn parse_set(s: &str) -> HashSet<&str> {
    s.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .collect()
}

/// Splits on commas outside parentheses.
fn split_top(sel: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in sel.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&sel[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&sel[start..]);
    out
}

/// Whether a pod satisfies a field selector (`metadata.name`, `metadata.namespace`,
/// `spec.nodeName`, `status.phase` with `=`, `==` or `!=`).
pub fn field_match(sel: &str, pod: &Value) -> bool {
    sel.split(',').all(|req| {
        let req = req.trim();
        if req.is_empty() {
            return true;
        }
        let (k, v, neg) = if let Some((k, v)) = req.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            (k, v, false)
        } else {
            return false;
        };
        let got = match k.trim() {
            "metadata.name" => pod["metadata"]["name"].as_str(),
            "metadata.namespace" => pod["metadata"]["namespace"].as_str(),
            "spec.nodeName" => pod["spec"]["nodeName"].as_str(),
            "status.phase" => pod["status"]["phase"].as_str(),
            _ => return false,
        };
        (got == Some(v.trim())) != neg
    })
}

// ---- HTTP ------------------------------------------------------------------

struct Resp {
    code: u16,
    body: Value,
}

fn ok(body: Value) -> Resp {
    Resp { code: 200, body }
}

fn status(code: u16, reason: &str, message: &str) -> Resp {
    Resp {
        code,
        body: json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code
        }),
    }
}

fn not_found(resource: &str, name: &str) -> Resp {
    status(404, "NotFound", &format!("{resource} \"{name}\" not found"))
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Request>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(&buf[..end + 4])
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let method = req.method.unwrap_or("GET").to_string();
            let target = req.path.unwrap_or("/").to_string();
            let len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 8192];
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body_bytes = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let (path, q) = target.split_once('?').unwrap_or((&target, ""));
            let query = q
                .split('&')
                .filter(|s| !s.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect();
            let body = serde_json::from_slice(&body_bytes).unwrap_or(Value::Null);
            return Ok(Some(Request {
                method,
                path: path.to_string(),
                query,
                body,
            }));
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve_conn(mut sock: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await? {
        {
            let mut st = shared.state.lock().unwrap();
            let q: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            st.requests
                .push(format!("{} {}?{}", req.method, req.path, q.join("&")));
        }
        let watch = matches!(
            req.query.get("watch").map(String::as_str),
            Some("true" | "1")
        );
        if watch && req.method == "GET" {
            watch_pods(&mut sock, &shared, &req).await?;
            continue;
        }
        let resp = route(&shared, &req);
        let body = serde_json::to_vec(&resp.body).unwrap();
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            resp.code,
            body.len()
        );
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(&body).await?;
    }
    Ok(())
}

/// `/api/v1/namespaces/NS/pods?watch=true&resourceVersion=RV`: every pod event after
/// RV that matches the selectors, one JSON line per chunk, until `timeoutSeconds`.
async fn watch_pods(
    sock: &mut TcpStream,
    shared: &Arc<Shared>,
    req: &Request,
) -> std::io::Result<()> {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let ns = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods"] => ns.to_string(),
        _ => {
            let body = serde_json::to_vec(&status(404, "NotFound", "no such watch").body).unwrap();
            let head = format!(
                "HTTP/1.1 404 X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await?;
            return sock.write_all(&body).await;
        }
    };
    let labels = req.query.get("labelSelector").cloned().unwrap_or_default();
    let fields = req.query.get("fieldSelector").cloned().unwrap_or_default();
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(300);
    let mut from: u64 = req
        .query
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| shared.state.lock().unwrap().rv);
    sock.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await?;
    let cap = shared.state.lock().unwrap().config.watch_cap;
    let deadline = tokio::time::Instant::now()
        + cap
            .unwrap_or(Duration::from_secs(timeout))
            .min(Duration::from_secs(timeout));
    shared.state.lock().unwrap().watches += 1;
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let batch: Vec<Value> = {
            let st = shared.state.lock().unwrap();
            let out = st
                .events
                .iter()
                .filter(|(rv, _, p)| {
                    *rv > from
                        && p["metadata"]["namespace"] == ns.as_str()
                        && label_match(&labels, &p["metadata"]["labels"])
                        && field_match(&fields, p)
                })
                .map(|(_, t, p)| json!({ "type": t, "object": p }))
                .collect();
            from = st.rv;
            out
        };
        for ev in batch {
            let mut line = serde_json::to_vec(&ev).unwrap();
            line.push(b'\n');
            sock.write_all(format!("{:x}\r\n", line.len()).as_bytes())
                .await?;
            sock.write_all(&line).await?;
            sock.write_all(b"\r\n").await?;
        }
        sock.flush().await?;
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => break,
            // Wake now and then: a timer-driven change may race the notify.
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    sock.write_all(b"0\r\n\r\n").await
}

/// A JSON merge patch (RFC 7386).
fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn route(shared: &Arc<Shared>, req: &Request) -> Resp {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let m = req.method.as_str();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods"] if m == "GET" => {
            let st = shared.state.lock().unwrap();
            let labels = req.query.get("labelSelector").cloned().unwrap_or_default();
            let fields = req.query.get("fieldSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = st
                .pods
                .iter()
                .filter(|((n, _), p)| {
                    n == ns
                        && label_match(&labels, &p["metadata"]["labels"])
                        && field_match(&fields, p)
                })
                .map(|(_, p)| p.clone())
                .collect();
            ok(json!({
                "apiVersion": "v1", "kind": "PodList",
                "metadata": { "resourceVersion": st.rv.to_string() },
                "items": items
            }))
        }
        ["api", "v1", "namespaces", ns, "pods", name] => match m {
            "GET" => {
                let st = shared.state.lock().unwrap();
                st.pods
                    .get(&(ns.to_string(), name.to_string()))
                    .cloned()
                    .map_or_else(|| not_found("pods", name), ok)
            }
            "DELETE" => match shared.delete_pod(ns, name, &req.body) {
                Ok(p) => ok(p),
                Err(e) => e,
            },
            _ => status(405, "MethodNotAllowed", "method not allowed"),
        },
        ["apis", "apps", "v1", "namespaces", ns, "replicasets", name] if m == "GET" => {
            let st = shared.state.lock().unwrap();
            let found = st
                .workloads
                .iter()
                .find(|((n, _, _), w)| n == ns && w.rs.as_ref().is_some_and(|r| r.0 == *name));
            match found {
                Some((key, w)) => {
                    let (rs_name, rs_uid) = w.rs.clone().unwrap();
                    ok(json!({
                        "apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": { "name": rs_name, "namespace": ns, "uid": rs_uid,
                            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment",
                                "name": w.spec.name, "uid": w.uid, "controller": true }] },
                        "spec": { "replicas": w.spec.replicas,
                                  "selector": { "matchLabels": w.spec.labels } },
                        "status": { "replicas": st.live_pods(key).len(),
                                    "readyReplicas": st.ready_count(key) }
                    }))
                }
                None => not_found("replicasets.apps", name),
            }
        }
        [
            "apis",
            "apps",
            "v1",
            "namespaces",
            ns,
            plural,
            name,
            rest @ ..,
        ] if *plural == "deployments" || *plural == "statefulsets" => {
            let kind = if *plural == "deployments" {
                Kind::Deployment
            } else {
                Kind::StatefulSet
            };
            let key = (ns.to_string(), kind, name.to_string());
            let mut st = shared.state.lock().unwrap();
            if !st.workloads.contains_key(&key) {
                return not_found(&format!("{plural}.apps"), name);
            }
            match (rest, m) {
                ([], "GET") => ok(st.workload_json(&key)),
                ([], "PATCH") => {
                    let mut obj = st.workload_json(&key);
                    merge_patch(&mut obj, &req.body);
                    apply_workload(&mut st, &key, &obj);
                    shared.reconcile(&mut st);
                    ok(st.workload_json(&key))
                }
                (["scale"], "GET") => ok(st.scale_json(&key)),
                (["scale"], "PATCH" | "PUT") => {
                    let mut obj = st.scale_json(&key);
                    if m == "PUT" {
                        obj = req.body.clone();
                    } else {
                        merge_patch(&mut obj, &req.body);
                    }
                    if let Some(r) = obj["spec"]["replicas"].as_u64() {
                        st.workloads.get_mut(&key).unwrap().spec.replicas = r as u32;
                    }
                    shared.reconcile(&mut st);
                    ok(st.scale_json(&key))
                }
                _ => status(405, "MethodNotAllowed", "method not allowed"),
            }
        }
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] if m == "POST" => {
            let a = &req.body["spec"]["resourceAttributes"];
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            let resource = if s("subresource").is_empty() {
                s("resource")
            } else {
                format!("{}/{}", s("resource"), s("subresource"))
            };
            let mut st = shared.state.lock().unwrap();
            let denied = st.denied.iter().any(|(v, r, n)| {
                *v == s("verb") && *r == resource && (n == "*" || *n == s("namespace"))
            });
            st.reviews.push(Review {
                verb: s("verb"),
                group: s("group"),
                resource: s("resource"),
                subresource: s("subresource"),
                namespace: s("namespace"),
                allowed: !denied,
            });
            let mut out = req.body.clone();
            out["status"] = if denied {
                json!({ "allowed": false, "reason": "denied by the test" })
            } else {
                json!({ "allowed": true, "reason": "allowed by the fake" })
            };
            Resp {
                code: 201,
                body: out,
            }
        }
        _ => status(
            404,
            "NotFound",
            &format!("the fake has no {} {}", req.method, req.path),
        ),
    }
}

/// Takes `spec.replicas` and the annotations of a patched workload object.
fn apply_workload(st: &mut State, key: &(String, Kind, String), obj: &Value) {
    let w = st.workloads.get_mut(key).unwrap();
    if let Some(r) = obj["spec"]["replicas"].as_u64() {
        w.spec.replicas = r as u32;
    }
    w.annotations = obj["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
}

/// A pod from the fake's state by name, for tests that inspect one.
pub fn find<'a>(pods: &'a [Value], name: &str) -> Option<&'a Value> {
    pods.iter().find(|p| name_of(p) == name)
}

/// The fixture directory of the scenario files of the Kubernetes tests.
pub fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubernetes"
    ))
}
