//! Pruning against a real distribution registry (deletion enabled), and against local stand-ins for GitHub's
//! packages API and Docker Hub, written to their documented behaviour, with the requests made asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::testing::{image, index, repo, Build, Fixture, Request, Response, Server, TestRegistry};
use super::{remove_superseded, remove_untagged, Access, Backend, Kind, PruneReport, Removal};
use crate::oci::media_type::{DOCKER_LIST, DOCKER_MANIFEST};
use crate::oci::{Digest, Manifest};
use crate::registry::{Credentials, Reference, Repo, Repository};

fn digest_of(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// A digest the tests hold as text, typed.
fn typed(digest: &str) -> Digest {
    digest.parse().unwrap()
}

/// A fresh registry, the target `repository` in it, and the client for that target.
fn fresh(repository: &str) -> (TestRegistry, Reference, Repo) {
    let registry = TestRegistry::start();
    let target = Reference::parse(&format!("{}/{repository}", registry.address())).unwrap();
    let plain = repo(&target);
    (registry, target, plain)
}

/// What the manifest stage does for `latest`: note the old digest, push by digest, move the tags, check the new
/// `latest` is live, then prune.
fn release(
    client: &dyn Repository,
    plain: &Repo,
    access: &Access,
    build: &Build,
    extra_tags: &[&str],
) -> Option<PruneReport> {
    let old = client.resolve("latest").unwrap();
    // A racing release's prune may delete a child shared with this build between its push and the index's: the
    // registry then refuses the index, and the stage fails before moving any tag (all or nothing).
    if let Err(err) = build.try_push(plain) {
        assert!(err.contains("MANIFEST_BLOB_UNKNOWN"), "{err}");
        return None;
    }
    for tag in extra_tags {
        build.tag(plain, tag);
    }
    build.tag(plain, "latest");
    // The manifest stage reads the tag back and stops, without pruning, if another release moved it meanwhile.
    if client.resolve("latest").unwrap() != Some(typed(&build.digest())) {
        return None;
    }
    old.map(|old| remove_superseded(client, access, &old, &typed(&build.digest())))
}

fn sorted(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = items.into_iter().collect();
    out.sort();
    out
}

/// Polls HEAD `latest` every 50 ms until stopped; returns the statuses seen.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<u16>>>,
}

impl Poller {
    fn start(target: Reference) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || {
            let plain = repo(&target);
            let mut seen = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                seen.push(plain.head("latest"));
                std::thread::sleep(Duration::from_millis(50));
            }
            seen.push(plain.head("latest"));
            seen
        });
        Poller {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

#[test]
fn three_releases_leave_one_latest_and_its_children() {
    let (registry, target, plain) = fresh("team/app");
    let access = Access::default();
    let builds = [Build::new("one"), Build::new("two"), Build::new("three")];

    assert!(release(&plain, &plain, &access, &builds[0], &[]).is_none());
    let poller = Poller::start(target.clone());
    let mut reports = Vec::new();
    for build in &builds[1..] {
        // Let the poller see the registry between and during the releases.
        std::thread::sleep(Duration::from_millis(120));
        reports.push(release(&plain, &plain, &access, build, &[]).unwrap());
    }
    std::thread::sleep(Duration::from_millis(120));
    let polls = poller.finish();

    for (report, old) in reports.iter().zip(&builds) {
        assert!(!report.failed(), "{report:#?}");
        let mut want = vec![old.digest()];
        want.extend(old.children());
        assert_eq!(report.deleted, want, "index first, then its children");
        assert!(report.restored.is_empty());
    }
    let last = &builds[2];
    let mut want = vec![last.digest()];
    want.extend(last.children());
    assert_eq!(
        registry.stored_manifests("team/app"),
        sorted(want),
        "exactly the latest index and its two children remain"
    );
    for old in &builds[..2] {
        assert_eq!(plain.head(&old.digest()), 404);
        for child in old.children() {
            assert_eq!(plain.head(&child), 404);
        }
    }
    assert!(polls.len() >= 5, "polled {} times", polls.len());
    assert!(
        polls.iter().all(|status| *status == 200),
        "latest must answer 200 at every poll: {polls:?}"
    );
    // A second run has nothing left to do, and says so without failing.
    let again = remove_superseded(
        &plain,
        &access,
        &typed(&builds[1].digest()),
        &typed(&last.digest()),
    );
    assert!(!again.failed() && again.deleted.is_empty(), "{again:#?}");
    assert!(!again.warnings().is_empty());
}

#[test]
fn version_tags_keep_what_they_use() {
    let (registry, _target, plain) = fresh("team/app");
    let access = Access::default();
    let (a, b, c, d) = (
        Build::new("a"),
        Build::new("b"),
        Build::new("c"),
        Build::new("d"),
    );
    release(&plain, &plain, &access, &a, &[]);
    // 1.0.0 is released from the same build as this `latest`: the very same index.
    let report = release(&plain, &plain, &access, &b, &["1.0.0"]).unwrap();
    assert_eq!(report.deleted.len(), 3, "{report:#?}");
    let report = release(&plain, &plain, &access, &c, &[]).unwrap();
    assert!(report.deleted.is_empty(), "{report:#?}");
    assert!(report
        .kept
        .iter()
        .any(|(d, why)| d == &b.digest() && why.contains("1.0.0")));
    for digest in std::iter::once(b.digest()).chain(b.children()) {
        assert_eq!(plain.head(&digest), 200, "1.0.0 keeps {digest}");
    }
    // 2.0.0 is an index of its own over c's children: c's index can go, its children cannot.
    let other = index(&[&c.arm64, &c.amd64]);
    plain.put("2.0.0", DOCKER_LIST, &other);
    let report = release(&plain, &plain, &access, &d, &[]).unwrap();
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(report.deleted, vec![c.digest()]);
    assert_eq!(plain.head(&c.digest()), 404);
    for child in c.children() {
        assert_eq!(plain.head(&child), 200, "2.0.0 keeps {child}");
    }
    let mut want = vec![b.digest(), d.digest(), digest_of(&other)];
    want.extend(b.children());
    want.extend(c.children());
    want.extend(d.children());
    assert_eq!(registry.stored_manifests("team/app"), sorted(want));
}

/// A registry that runs a hook just before deleting a given digest: a release racing the prune, made
/// deterministic.
struct RaceAt<'a> {
    inner: &'a Repo,
    at: String,
    hook: Mutex<Option<Box<dyn FnOnce() + 'a>>>,
}

impl Repository for RaceAt<'_> {
    fn target(&self) -> &Reference {
        self.inner.target()
    }
    fn manifest(&self, reference: &str) -> anyhow::Result<Option<Manifest>> {
        self.inner.manifest(reference)
    }
    fn resolve(&self, tag: &str) -> anyhow::Result<Option<Digest>> {
        self.inner.resolve(tag)
    }
    fn blob(&self, digest: &Digest) -> anyhow::Result<Option<Vec<u8>>> {
        self.inner.blob(digest)
    }
    fn put_manifest(&self, reference: &str, manifest: &Manifest) -> anyhow::Result<()> {
        self.inner.put_manifest(reference, manifest)
    }
    fn tags(&self) -> anyhow::Result<Vec<String>> {
        self.inner.tags()
    }
    fn delete(&self, digest: &Digest) -> anyhow::Result<Removal> {
        if digest.as_str() == self.at {
            if let Some(hook) = self.hook.lock().unwrap().take() {
                hook();
            }
        }
        self.inner.delete(digest)
    }
}

#[test]
fn a_release_racing_the_prune_keeps_an_intact_latest() {
    let (_registry, _target, plain) = fresh("team/app");
    let access = Access::default();
    let x = Build::new("x");
    let a = Build::new("a");
    // The racing release reuses x's amd64 image (an unchanged platform rebuilds to the same digest).
    let racer = Build::from(image("amd64", "x"), image("arm64", "racer"));
    release(&plain, &plain, &access, &x, &[]);
    a.push(&plain);
    a.tag(&plain, "latest");
    // Just before the prune deletes x's amd64 child, the racer publishes an index listing it and moves latest.
    let racing = RaceAt {
        inner: &plain,
        at: x.amd64.digest(),
        hook: Mutex::new(Some(Box::new(|| {
            racer.push(&plain);
            racer.tag(&plain, "latest");
        }))),
    };
    let report = remove_superseded(&racing, &access, &typed(&x.digest()), &typed(&a.digest()));
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(report.restored, vec![x.amd64.digest()], "{report:#?}");
    assert_eq!(plain.digest_of_tag("latest"), Some(racer.digest()));
    for child in racer.children() {
        assert_eq!(plain.head(&child), 200, "latest's child {child}");
    }
    assert_eq!(plain.head(&x.digest()), 404);
    assert_eq!(plain.head(&x.arm64.digest()), 404);
}

#[test]
fn two_releases_racing_end_with_an_intact_latest() {
    let (_registry, target, plain) = fresh("team/app");
    let access = Access::default();
    release(&plain, &plain, &access, &Build::new("base"), &[]);
    for round in 0..4 {
        // Both builds share the amd64 image with the base, so one's prune can hit the other's child.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = ["left", "right"]
            .into_iter()
            .map(|side| {
                let (target, access, barrier) = (target.clone(), access.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let plain = repo(&target);
                    let seed = format!("{side}-{round}");
                    let shared = if round % 2 == 0 { "base" } else { "shared" };
                    let build = Build::from(image("amd64", shared), image("arm64", &seed));
                    barrier.wait();
                    release(&plain, &plain, &access, &build, &[])
                })
            })
            .collect();
        for handle in handles {
            if let Some(report) = handle.join().unwrap() {
                assert!(!report.failed(), "round {round}: {report:#?}");
            }
        }
        let (_, children) = plain.read("latest").expect("latest");
        for child in children {
            assert_eq!(
                plain.head(&child),
                200,
                "round {round}: child {child} of latest"
            );
        }
    }
}

#[test]
fn deletion_disabled_is_reported_not_fatal() {
    // A registry answering 405 to DELETE (distribution without storage.delete.enabled, or GHCR's registry API).
    let upstream = TestRegistry::start();
    let real = upstream.address().to_owned();
    let proxy = Server::start(move |request| {
        if request.method == "DELETE" {
            return Response::json(
                405,
                serde_json::json!({"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]}),
            );
        }
        forward(&real, request)
    });
    let target = Reference::parse(&format!("{}/team/app", proxy.address)).unwrap();
    let plain = repo(&target);
    let (a, b) = (Build::new("a"), Build::new("b"));
    release(&plain, &plain, &Access::default(), &a, &[]);
    let report = release(&plain, &plain, &Access::default(), &b, &[]).unwrap();
    assert!(report.failed() && report.deleted.is_empty(), "{report:#?}");
    assert!(
        report.failures[0].contains("storage.delete.enabled"),
        "{report:#?}"
    );
    // The children of an index that could not be deleted are kept, so nothing is left broken.
    assert_eq!(report.failures.len(), 1, "{report:#?}");
    let hint = format!(
        "cargo xtask image prune --to {target} --digest {}",
        a.digest()
    );
    assert!(
        report.notes.iter().any(|n| n.contains(&hint)),
        "{report:#?}"
    );
    for child in a.children() {
        assert_eq!(plain.head(&child), 200);
    }
}

/// Forwards a request to the real registry, rewriting nothing but the host.
fn forward(upstream: &str, request: &Request) -> Response {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut builder = ureq::http::Request::builder()
        .method(request.method.as_str())
        .uri(format!("http://{upstream}{}", request.target));
    for (name, value) in &request.headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            builder = builder.header(name, value);
        }
    }
    let mut answer = agent
        .run(builder.body(request.body.clone()).unwrap())
        .unwrap();
    let headers = answer
        .headers()
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "content-length" | "connection" | "transfer-encoding"
            )
        })
        .map(|(name, value)| {
            // Upload locations point at the real registry: make them relative, so they come back here.
            let value = value
                .to_str()
                .unwrap_or_default()
                .replace(&format!("http://{upstream}"), "");
            (name.to_string(), value)
        })
        .collect();
    Response {
        status: answer.status().as_u16(),
        headers,
        body: answer.body_mut().read_to_vec().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// GHCR: a stand-in for GitHub's packages REST API, next to a real registry holding the manifests.

/// One package version, as GitHub keeps it.
#[derive(Clone, Debug)]
struct Version {
    id: u64,
    name: String,
    tags: Vec<String>,
    deleted: bool,
}

#[derive(Default)]
struct Packages {
    owner: String,
    /// "User" or "Organization".
    owner_type: String,
    package: String,
    token: String,
    versions: Vec<Version>,
    next_id: u64,
    /// Versions whose deletion GitHub refuses with 400 (the last tagged version), however they look.
    refuse: BTreeSet<u64>,
    requests: Vec<String>,
}

impl Packages {
    fn id_of(&self, digest: &str) -> u64 {
        self.versions.iter().find(|v| v.name == digest).unwrap().id
    }

    /// Mirrors the registry: every manifest pushed is a version (ids in push order), tags as the registry has them.
    fn sync(&mut self, plain: &Repo, pushed: &[String]) {
        for digest in pushed {
            if !self.versions.iter().any(|v| &v.name == digest) {
                self.next_id += 7;
                self.versions.push(Version {
                    id: self.next_id,
                    name: digest.clone(),
                    tags: Vec::new(),
                    deleted: false,
                });
            }
        }
        let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for tag in plain.tags().unwrap() {
            let digest = plain.digest_of_tag(&tag).unwrap();
            tags.entry(digest).or_default().push(tag);
        }
        for version in &mut self.versions {
            version.tags = tags.remove(&version.name).unwrap_or_default();
        }
    }

    fn handle(&mut self, base: &str, request: &Request) -> Response {
        self.requests
            .push(format!("{} {}", request.method, request.target));
        if request.header("authorization") != Some(&format!("Bearer {}", self.token)) {
            return Response::json(
                401,
                serde_json::json!({"message": "Requires authentication"}),
            );
        }
        let owner_path = format!("/users/{}", self.owner);
        if request.method == "GET" && request.path() == owner_path {
            return Response::json(
                200,
                serde_json::json!({"login": self.owner, "id": 1, "type": self.owner_type}),
            );
        }
        let kind = if self.owner_type == "Organization" {
            "orgs"
        } else {
            "users"
        };
        let versions = format!(
            "/{kind}/{}/packages/container/{}/versions",
            self.owner,
            self.package.replace('/', "%2F")
        );
        if request.method == "GET" && request.path() == versions {
            let (page, per_page) = request.page("per_page", 30);
            // Newest first, as GitHub lists them.
            let live: Vec<&Version> = self.versions.iter().rev().filter(|v| !v.deleted).collect();
            let pages = live.len().div_ceil(per_page).max(1);
            let body: Vec<_> = live
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|v| {
                    serde_json::json!({
                        "id": v.id, "name": v.name,
                        "url": format!("{base}{versions}/{}", v.id),
                        "package_html_url": "https://github.com/x", "created_at": "2024-01-01T00:00:00Z",
                        "metadata": {"package_type": "container", "container": {"tags": v.tags}},
                    })
                })
                .collect();
            let mut response = Response::json(200, serde_json::Value::Array(body));
            let link = |page: usize, rel: &str| {
                format!("<{base}{versions}?per_page={per_page}&page={page}>; rel=\"{rel}\"")
            };
            let mut links = Vec::new();
            if page < pages {
                links.push(link(page + 1, "next"));
                links.push(link(pages, "last"));
            }
            if page > 1 {
                links.push(link(1, "first"));
                links.push(link(page - 1, "prev"));
            }
            if !links.is_empty() {
                response.headers.push(("Link".into(), links.join(", ")));
            }
            return response;
        }
        if request.method == "DELETE" {
            if let Some(id) = request
                .path()
                .strip_prefix(&format!("{versions}/"))
                .and_then(|id| id.parse::<u64>().ok())
            {
                let live_tagged = self
                    .versions
                    .iter()
                    .filter(|v| !v.deleted && !v.tags.is_empty())
                    .count();
                let live = self.versions.iter().filter(|v| !v.deleted).count();
                let refuse = self.refuse.contains(&id);
                let Some(version) = self.versions.iter_mut().find(|v| v.id == id && !v.deleted)
                else {
                    return Response::json(404, serde_json::json!({"message": "Not Found"}));
                };
                if refuse || live == 1 || (!version.tags.is_empty() && live_tagged == 1) {
                    return Response::json(
                        400,
                        serde_json::json!({"message": "You cannot delete the last tagged version of a package. You must delete the package instead."}),
                    );
                }
                version.deleted = true;
                return Response::empty(204);
            }
        }
        Response::json(404, serde_json::json!({"message": "Not Found"}))
    }

    fn deletes(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| r.starts_with("DELETE"))
            .cloned()
            .collect()
    }
}

fn packages_api(state: Arc<Mutex<Packages>>) -> Server {
    let base = Arc::new(Mutex::new(String::new()));
    let base_for_handler = base.clone();
    let server = Server::start(move |request| {
        let base = base_for_handler.lock().unwrap().clone();
        state.lock().unwrap().handle(&base, request)
    });
    *base.lock().unwrap() = server.url();
    server
}

/// Prune access that treats the test registry as GHCR, with the stand-in API and its token.
fn ghcr_access(api: &Server, registry: &TestRegistry) -> Access {
    Access {
        github_api: api.url(),
        github_token: Some("ghs_test".into()),
        overrides: [(registry.address().to_owned(), Kind::Ghcr)].into(),
        ..Access::default()
    }
}

#[test]
fn ghcr_prunes_package_versions_through_the_api() {
    for owner_type in ["Organization", "User"] {
        let (registry, _target, plain) = fresh("acme/team/app");
        let state = Arc::new(Mutex::new(Packages {
            owner: "acme".into(),
            owner_type: owner_type.into(),
            package: "team/app".into(),
            token: "ghs_test".into(),
            next_id: 5000,
            ..Packages::default()
        }));
        // Untagged clutter from earlier tools: more than one page of versions.
        let fillers: Vec<String> = (0..110)
            .map(|i| digest_of(format!("filler {i}").as_bytes()))
            .collect();
        state.lock().unwrap().sync(&plain, &fillers);
        let api = packages_api(state.clone());
        let access = ghcr_access(&api, &registry);
        let (a, b) = (Build::new("a"), Build::new("b"));
        let c = Build::from(image("amd64", "b"), image("arm64", "c"));
        let pushed = |build: &Build| {
            let mut all = build.children().to_vec();
            all.push(build.digest());
            all
        };

        release(&plain, &plain, &access, &a, &["1.0.0"]);
        state.lock().unwrap().sync(&plain, &pushed(&a));
        // a is still tagged 1.0.0: nothing may go.
        b.push(&plain);
        b.tag(&plain, "latest");
        state.lock().unwrap().sync(&plain, &pushed(&b));
        let report = remove_superseded(&plain, &access, &typed(&a.digest()), &typed(&b.digest()));
        assert!(!report.failed() && report.deleted.is_empty(), "{report:#?}");
        assert!(state.lock().unwrap().deletes().is_empty());

        // c shares b's amd64 image: b's index and arm64 image go, by version id, index first.
        c.push(&plain);
        c.tag(&plain, "latest");
        state.lock().unwrap().sync(&plain, &pushed(&c));
        let report = remove_superseded(&plain, &access, &typed(&b.digest()), &typed(&c.digest()));
        assert!(!report.failed(), "{report:#?}");
        assert_eq!(report.deleted, vec![b.digest(), b.arm64.digest()]);
        let (deletes, requests, ids) = {
            let s = state.lock().unwrap();
            let kind = if owner_type == "Organization" {
                "orgs"
            } else {
                "users"
            };
            let path = format!("/{kind}/acme/packages/container/team%2Fapp/versions");
            (
                s.deletes(),
                s.requests.clone(),
                [b.digest(), b.arm64.digest()].map(|d| format!("DELETE {path}/{}", s.id_of(&d))),
            )
        };
        assert_eq!(deletes, ids.to_vec(), "{owner_type}");
        assert!(
            requests.iter().any(|r| r.contains("page=2")),
            "the second page of versions was read: {requests:#?}"
        );
        // GHCR's registry DELETE answers 405, so it is never used: the registry itself still holds b.
        assert_eq!(plain.head(&b.digest()), 200);

        // GitHub refuses with 400 (the last tagged version): reported, and the index's children are left alone.
        let d = Build::new("d");
        d.push(&plain);
        d.tag(&plain, "latest");
        {
            let mut s = state.lock().unwrap();
            s.sync(&plain, &pushed(&d));
            let id = s.id_of(&c.digest());
            s.refuse.insert(id);
        }
        let before = state.lock().unwrap().deletes().len();
        let report = remove_superseded(&plain, &access, &typed(&c.digest()), &typed(&d.digest()));
        assert!(report.failed(), "{report:#?}");
        assert!(
            report.failures[0].contains("400")
                && report.failures[0].contains("last tagged version"),
            "{report:#?}"
        );
        assert!(report.deleted.is_empty());
        let after = state.lock().unwrap().deletes();
        assert_eq!(
            after.len(),
            before + 1,
            "only the refused index: {after:#?}"
        );
    }
}

#[test]
fn ghcr_image_prune_lists_then_removes_untagged_clutter() {
    let (registry, _target, plain) = fresh("acme/app");
    let state = Arc::new(Mutex::new(Packages {
        owner: "acme".into(),
        owner_type: "User".into(),
        package: "app".into(),
        token: "ghs_test".into(),
        ..Packages::default()
    }));
    let api = packages_api(state.clone());
    let access = ghcr_access(&api, &registry);
    let live = Build::new("live");
    let stray = Build::from(image("amd64", "live"), image("arm64", "stray"));
    let lone = image("arm64", "lone");
    for build in [&stray, &live] {
        build.push(&plain);
    }
    for blob in &lone.blobs {
        plain.push_blob(blob);
    }
    plain.put(&lone.digest(), DOCKER_MANIFEST, &lone.manifest);
    live.tag(&plain, "latest");
    let mut pushed: Vec<String> = stray.children().to_vec();
    pushed.push(stray.digest());
    pushed.extend(live.children());
    pushed.push(live.digest());
    pushed.push(lone.digest());
    state.lock().unwrap().sync(&plain, &pushed);

    let listed = remove_untagged(&plain, &access, &[], false);
    assert!(!listed.failed(), "{listed:#?}");
    let want = vec![stray.digest(), stray.arm64.digest(), lone.digest()];
    assert_eq!(sorted(listed.would_delete.clone()), sorted(want.clone()));
    assert!(
        state.lock().unwrap().deletes().is_empty(),
        "listing deletes nothing"
    );
    let index_first = listed
        .would_delete
        .iter()
        .position(|d| d == &stray.digest());
    let child_after = listed
        .would_delete
        .iter()
        .position(|d| d == &stray.arm64.digest());
    assert!(index_first < child_after, "{listed:#?}");

    let done = remove_untagged(&plain, &access, &[], true);
    assert!(!done.failed(), "{done:#?}");
    assert_eq!(sorted(done.deleted.clone()), sorted(want));
    let s = state.lock().unwrap();
    let remaining: BTreeSet<&str> = s
        .versions
        .iter()
        .filter(|v| !v.deleted)
        .map(|v| v.name.as_str())
        .collect();
    let expect: BTreeSet<String> = std::iter::once(live.digest())
        .chain(live.children())
        .collect();
    assert_eq!(remaining, expect.iter().map(String::as_str).collect());
}

// ---------------------------------------------------------------------------------------------------------------
// Docker Hub: a stand-in for Docker Hub's API (login, tags with pagination) and for its registry's DELETE rule
// (403 while a tag or another index references the manifest), in front of a real registry.

struct Hub {
    upstream: String,
    storage: std::path::PathBuf,
    repository: String,
    login: (String, String),
    token: String,
    api_requests: Vec<String>,
    deletes: Vec<(String, u16)>,
    /// Tags whose move the API does not show yet (Docker Hub's API is eventually consistent): tag -> old digest.
    lagging: BTreeMap<String, String>,
}

impl Hub {
    /// Tags, their digests and platform images: as the API shows them (`lag`), or as the registry has them.
    fn tags_live(&self, lag: bool) -> Vec<(String, String, Vec<String>)> {
        let target = Reference::parse(&format!("{}/{}", self.upstream, self.repository)).unwrap();
        let plain = repo(&target);
        let mut out = Vec::new();
        for tag in plain.tags().unwrap() {
            let (digest, kids) = plain.read(&tag).unwrap();
            let images = if kids.is_empty() {
                vec![digest.clone()]
            } else {
                kids
            };
            let digest = match self.lagging.get(&tag).filter(|_| lag) {
                Some(old) => {
                    // It may be deleted already; the API still shows it, with whatever it knew.
                    let kids = plain.read(old).map(|(_, kids)| kids).unwrap_or_default();
                    out.push((tag, old.clone(), kids));
                    continue;
                }
                None => digest,
            };
            out.push((tag, digest, images));
        }
        out
    }

    fn api(&mut self, base: &str, request: &Request) -> Response {
        self.api_requests
            .push(format!("{} {}", request.method, request.target));
        if request.method == "POST" && request.path() == "/v2/auth/token" {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            if body["identifier"] == self.login.0.as_str()
                && body["secret"] == self.login.1.as_str()
            {
                return Response::json(200, serde_json::json!({"access_token": self.token}));
            }
            return Response::json(
                401,
                serde_json::json!({"detail": "Incorrect authentication credentials"}),
            );
        }
        let (namespace, name) = self.repository.split_once('/').unwrap();
        let path = format!("/v2/namespaces/{namespace}/repositories/{name}/tags");
        if request.method == "GET" && request.path() == path {
            // A private repository: the tag list needs the bearer token.
            if request.header("authorization") != Some(&format!("Bearer {}", self.token)) {
                return Response::json(
                    403,
                    serde_json::json!({"message": "permission denied", "errinfo": null}),
                );
            }
            let (page, size) = request.page("page_size", 10);
            let tags = self.tags_live(true);
            let results: Vec<_> = tags
                .iter()
                .skip((page - 1) * size)
                .take(size)
                .map(|(tag, digest, images)| {
                    serde_json::json!({
                        "id": 1, "creator": 1, "name": tag, "digest": digest, "tag_status": "active",
                        "content_type": "image", "full_size": 1,
                        "images": images.iter().map(|d| serde_json::json!({
                            "architecture": "amd64", "os": "linux", "digest": d, "size": 1, "status": "active",
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let next = (page * size < tags.len())
                .then(|| format!("{base}{path}?page={}&page_size={size}", page + 1));
            return Response::json(
                200,
                serde_json::json!({"count": tags.len(), "next": next, "previous": null, "results": results}),
            );
        }
        Response::json(
            404,
            serde_json::json!({"message": "not found", "errinfo": null}),
        )
    }

    /// The registry: everything goes to the real one, but DELETE follows Docker Hub's rule.
    fn registry(&mut self, request: &Request) -> Response {
        if request.method != "DELETE" {
            return forward(&self.upstream, request);
        }
        let digest = request
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let referenced = self.tags_live(false).iter().any(|(_, d, _)| d == &digest) || {
            let target =
                Reference::parse(&format!("{}/{}", self.upstream, self.repository)).unwrap();
            let plain = repo(&target);
            let dir = self.storage.join(format!(
                "docker/registry/v2/repositories/{}/_manifests/revisions/sha256",
                self.repository
            ));
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|entry| {
                    let other = format!("sha256:{}", entry.file_name().to_string_lossy());
                    other != digest
                        && entry.path().join("link").exists()
                        && plain
                            .read(&other)
                            .is_some_and(|(_, kids)| kids.contains(&digest))
                })
        };
        let response = if referenced {
            Response::json(
                403,
                serde_json::json!({"errors": [{"code": "DENIED", "message": "manifest is referenced"}]}),
            )
        } else {
            forward(&self.upstream, request)
        };
        self.deletes.push((digest, response.status));
        response
    }
}

#[test]
fn docker_hub_lists_tags_through_its_api_and_deletes_through_the_registry() {
    let upstream = TestRegistry::start();
    let hub = Arc::new(Mutex::new(Hub {
        upstream: upstream.address().to_owned(),
        // The stand-in reads the storage to know every index, as Docker Hub knows them.
        storage: upstream.storage(),
        repository: "acme/app".into(),
        login: ("acme-ci".into(), "dckr_pat_test".into()),
        token: "hub-jwt".into(),
        api_requests: Vec::new(),
        deletes: Vec::new(),
        lagging: BTreeMap::new(),
    }));
    let api_base = Arc::new(Mutex::new(String::new()));
    let api = {
        let (hub, api_base) = (hub.clone(), api_base.clone());
        Server::start(move |request| {
            let base = api_base.lock().unwrap().clone();
            hub.lock().unwrap().api(&base, request)
        })
    };
    *api_base.lock().unwrap() = api.url();
    let registry = {
        let hub = hub.clone();
        Server::start(move |request| hub.lock().unwrap().registry(request))
    };
    let target = Reference::parse(&format!("{}/acme/app", registry.address)).unwrap();
    let plain = repo(&target);
    let access = Access {
        dockerhub_api: api.url(),
        dockerhub_login: Some(Credentials::new("acme-ci", "dckr_pat_test")),
        overrides: [(registry.address.clone(), Kind::DockerHub)].into(),
        ..Access::default()
    };
    // 105 version tags on one old build: more than one page of the tag list.
    let v = Build::new("v");
    v.push(&plain);
    for n in 1..=105 {
        v.tag(&plain, &format!("0.0.{n}"));
    }
    let a = Build::from(image("amd64", "v"), image("arm64", "a"));
    let b = Build::new("b");
    release(&plain, &plain, &access, &a, &[]);
    let report = release(&plain, &plain, &access, &b, &[]).unwrap();
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(report.deleted, vec![a.digest(), a.arm64.digest()]);
    {
        let h = hub.lock().unwrap();
        assert_eq!(
            h.deletes,
            vec![(a.digest(), 202), (a.arm64.digest(), 202)],
            "the index, then its own child; never v's shared amd64 image"
        );
        assert!(h.api_requests.iter().any(|r| r == "POST /v2/auth/token"));
        assert!(
            h.api_requests.iter().any(|r| r.contains("page=2")),
            "{:#?}",
            h.api_requests
        );
    }
    for child in v.children() {
        assert_eq!(plain.head(&child), 200);
    }
    // Run again: the old index is gone (404 when read), which is a note, not a failure, and deletes nothing.
    let again = remove_superseded(&plain, &access, &typed(&a.digest()), &typed(&b.digest()));
    assert!(!again.failed() && again.deleted.is_empty(), "{again:#?}");
    assert_eq!(hub.lock().unwrap().deletes.len(), 2);

    // The backend's own answers: 403 for a tagged or listed manifest is a refusal, 404 is "already gone".
    let mut backend = super::dockerhub::DockerHub::new(&api.url(), None, &plain).unwrap();
    let cases = [
        (b.digest(), "tagged"),
        (v.amd64.digest(), "listed by a tagged index"),
    ];
    for (digest, why) in cases {
        match backend.delete(&digest).unwrap() {
            Removal::Refused {
                status: 403,
                message,
            } => {
                assert!(message.contains("still references"), "{why}: {message}")
            }
            other => panic!("{why}: {other:?}"),
        }
    }
    assert_eq!(backend.delete(&a.digest()).unwrap(), Removal::Gone);
    // The API still shows `latest` on the index it just left: the registry's answer wins, so it still goes.
    let c = Build::new("c");
    c.push(&plain);
    c.tag(&plain, "latest");
    hub.lock()
        .unwrap()
        .lagging
        .insert("latest".into(), b.digest());
    let report = remove_superseded(&plain, &access, &typed(&b.digest()), &typed(&c.digest()));
    hub.lock().unwrap().lagging.clear();
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(
        report.deleted,
        vec![b.digest(), b.amd64.digest(), b.arm64.digest()]
    );
    assert!(report.restored.is_empty(), "{report:#?}");
    // Without the login the private tag list is refused, and the prune reports it.
    let anonymous = Access {
        dockerhub_login: None,
        ..access.clone()
    };
    let d = Build::new("d");
    let report = release(&plain, &plain, &anonymous, &d, &[]).unwrap();
    assert!(report.failed() && report.deleted.is_empty(), "{report:#?}");
}
