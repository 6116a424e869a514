//! How requests reach a host: the trusted certificate authorities (the system's, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`) and the proxy for each origin (`https_proxy`, `http_proxy`, `all_proxy`, `no_proxy`, as curl
//! reads them), with one ureq agent per route. Shared by the registry client and the management APIs.
//!
//! TLS stays on rustls (already compiled in) with the roots read here from the same places OpenSSL and
//! rustls-native-certs read on Linux, so a private CA works without another TLS stack or a crate to find the
//! store; Mozilla's roots (webpki-roots) are the fallback only where the machine has no store at all.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::origin::Origin;

/// The proxy variables of the process, read once at the edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub https: Option<String>,
    pub http: Option<String>,
    pub all: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    pub fn from_process() -> ProxyEnv {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        ProxyEnv {
            https: var(&["https_proxy", "HTTPS_PROXY"]),
            // curl reads only the lower-case name for http (an upper-case HTTP_PROXY can come from a request
            // header in CGI); Go and Docker read both, and so do we outside CGI.
            http: if std::env::var_os("REQUEST_METHOD").is_some() {
                var(&["http_proxy"])
            } else {
                var(&["http_proxy", "HTTP_PROXY"])
            },
            all: var(&["all_proxy", "ALL_PROXY"]),
            no_proxy: var(&["no_proxy", "NO_PROXY"]),
        }
    }

    /// The proxy to use for `origin`, or None to go direct. Loopback never goes through a proxy, whatever the
    /// variables say: a proxy would see plain-HTTP credentials meant for this machine only.
    pub fn proxy_for(&self, origin: &Origin) -> Option<&str> {
        if origin.is_loopback() || self.bypassed(origin) {
            return None;
        }
        let chosen = if origin.https {
            &self.https
        } else {
            &self.http
        };
        chosen.as_deref().or(self.all.as_deref())
    }

    /// `no_proxy` as curl reads it: `*`, or comma-separated host names (a leading dot optional) matching the host
    /// and its subdomains, or addresses matching exactly; an entry may carry `:port`.
    fn bypassed(&self, origin: &Origin) -> bool {
        let Some(list) = &self.no_proxy else {
            return false;
        };
        let host = origin.host.trim_start_matches('[').trim_end_matches(']');
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .any(|entry| {
                if entry == "*" {
                    return true;
                }
                let entry = entry.to_ascii_lowercase();
                let (name, port) = match entry.rsplit_once(':') {
                    Some((name, port)) if !name.ends_with(':') && port.parse::<u16>().is_ok() => {
                        (name.to_owned(), port.parse::<u16>().ok())
                    }
                    _ => (entry.clone(), None),
                };
                let name = name
                    .trim_start_matches('.')
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                port.is_none_or(|p| p == origin.port)
                    && (host == name || host.ends_with(&format!(".{name}")))
            })
    }
}

/// Connection settings every agent shares.
#[derive(Clone, Debug)]
pub struct Settings {
    pub connect_timeout: Duration,
    /// Per read/write and for each answer's head and body.
    pub io_timeout: Duration,
    pub proxies: ProxyEnv,
}

/// Each connection's input and output buffers. ureq zeroes them on a connection's first use, which in the
/// unoptimised build `cargo xtask` runs is a byte-by-byte loop: at ureq's default 128 KiB it was a quarter of a
/// whole re-push. 32 KiB holds any answer's head and one TLS record (16 KiB) with room to spare, and bodies stream
/// through it in chunks either way.
const BUFFER: usize = 32 * 1024;

/// The longest answer head (status line and headers) accepted; registries send well under 2 KiB.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Agents by route (direct, or through one proxy) and by whether the route speaks TLS, made on first use.
/// Redirects are never followed by ureq: the registry client follows them itself, so it knows where every answer
/// came from.
pub struct Transport {
    settings: Settings,
    agents: RefCell<HashMap<(Option<String>, bool), ureq::Agent>>,
}

impl Transport {
    pub fn new(settings: Settings) -> Transport {
        Transport {
            settings,
            agents: RefCell::new(HashMap::new()),
        }
    }

    /// The agent for a request to `origin`: where the route speaks TLS the trust store must be readable (a bad
    /// `SSL_CERT_FILE` is an error naming it), and a proxy URL must parse. A plain-HTTP registry reached directly
    /// or through a plain-HTTP proxy never needs the trust store, so it is not read for one: parsing the system
    /// bundle costs more than a whole re-push to a local registry.
    pub fn agent(&self, origin: &Origin) -> Result<ureq::Agent, String> {
        let proxy = self.settings.proxies.proxy_for(origin).map(str::to_owned);
        let tls = origin.https
            || proxy
                .as_deref()
                .is_some_and(|p| !p.to_ascii_lowercase().starts_with("http://"));
        let key = (proxy, tls);
        if let Some(agent) = self.agents.borrow().get(&key) {
            return Ok(agent.clone());
        }
        let roots = if tls {
            trusted_roots()?
        } else {
            RootCerts::WebPki
        };
        let agent = self.build_with(key.0.as_deref(), &self.settings, roots, BUFFER)?;
        self.agents.borrow_mut().insert(key, agent.clone());
        Ok(agent)
    }

    /// A one-off agent for the TLS probe of a loopback registry, with its own timeouts. The probe only asks
    /// whether the far end speaks TLS, and a certificate it rejects counts as yes, so it trusts the compiled-in
    /// roots: nothing is read or parsed from the trust store for a registry that turns out to be plain HTTP.
    pub fn probe_agent(&self, origin: &Origin, timeout: Duration) -> Result<ureq::Agent, String> {
        let settings = Settings {
            connect_timeout: timeout,
            io_timeout: timeout,
            ..self.settings.clone()
        };
        self.build_with(
            self.settings.proxies.proxy_for(origin),
            &settings,
            RootCerts::WebPki,
            BUFFER,
        )
    }

    fn build_with(
        &self,
        proxy: Option<&str>,
        settings: &Settings,
        roots: RootCerts,
        buffer: usize,
    ) -> Result<ureq::Agent, String> {
        let proxy = match proxy {
            Some(url) => Some(ureq::Proxy::new(url).map_err(|err| {
                format!("the proxy {url:?} from the proxy variables is unusable ({err}); fix or unset it")
            })?),
            None => None,
        };
        let tls = TlsConfig::builder().root_certs(roots).build();
        Ok(ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(proxy)
            .tls_config(tls)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_per_read(Some(settings.io_timeout))
            .timeout_per_write(Some(settings.io_timeout))
            // A per-read timeout restarts with every byte: a server that trickles its answer would hold the
            // pipeline forever. The answers are small, so each whole part gets one budget.
            .timeout_send_request(Some(settings.io_timeout))
            .timeout_recv_response(Some(settings.io_timeout))
            .timeout_recv_body(Some(settings.io_timeout))
            .user_agent(concat!("xtask-image/", env!("CARGO_PKG_VERSION")))
            .input_buffer_size(buffer)
            .output_buffer_size(buffer)
            .max_response_header_size(MAX_RESPONSE_HEAD)
            .build()
            .new_agent())
    }
}

/// The certificate authorities TLS trusts, read once: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set (as OpenSSL
/// reads them), else the system bundle; Mozilla's roots only where there is none.
pub fn trusted_roots() -> Result<RootCerts, String> {
    static ROOTS: OnceLock<Result<RootCerts, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let var = |name: &str| {
                std::env::var_os(name)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            };
            load_roots(var("SSL_CERT_FILE"), var("SSL_CERT_DIR"), SYSTEM_BUNDLES)
        })
        .clone()
}

/// Where Linux distributions and macOS keep the system's CA bundle (the list OpenSSL's probes use).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn load_roots(
    file: Option<PathBuf>,
    dir: Option<PathBuf>,
    system: &[&str],
) -> Result<RootCerts, String> {
    let mut certs = Vec::new();
    let explicit = file.is_some() || dir.is_some();
    if let Some(file) = &file {
        let found = read_pem(file).map_err(|why| {
            format!(
                "SSL_CERT_FILE={} {why}; point it at a PEM bundle of the CAs to trust, or unset it",
                file.display()
            )
        })?;
        if found.is_empty() {
            return Err(format!(
                "SSL_CERT_FILE={} holds no PEM certificate; point it at a PEM bundle of the CAs to trust, or unset it",
                file.display()
            ));
        }
        certs.extend(found);
    }
    if let Some(dir) = &dir {
        for dir in std::env::split_paths(dir) {
            let entries = std::fs::read_dir(&dir).map_err(|err| {
                format!(
                    "SSL_CERT_DIR={} cannot be read ({err}); fix or unset it",
                    dir.display()
                )
            })?;
            // A hashed directory (c_rehash, update-ca-certificates) links each certificate under two or three
            // names, and often holds SSL_CERT_FILE's bundle too: each file is read once, by where it really is.
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok()?.path().canonicalize().ok())
                .filter(|p| p.is_file())
                .collect();
            paths.sort();
            paths.dedup();
            let bundle = file.as_ref().and_then(|f| f.canonicalize().ok());
            for path in paths.iter().filter(|p| Some(*p) != bundle.as_ref()) {
                // A hashed directory holds other files too; only what parses as PEM counts.
                certs.extend(read_pem(path).unwrap_or_default());
            }
        }
    }
    if !explicit {
        if let Some(bundle) = system.iter().map(Path::new).find(|p| p.is_file()) {
            certs.extend(read_pem(bundle).unwrap_or_default());
        }
    }
    if certs.is_empty() && !explicit {
        return Ok(RootCerts::WebPki);
    }
    // The same CA from the bundle and the directory is one trust anchor.
    let mut seen = std::collections::HashSet::new();
    certs.retain(|cert| seen.insert(cert.der().to_vec()));
    Ok(RootCerts::Specific(Arc::new(certs)))
}

fn read_pem(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|err| format!("cannot be read ({err})"))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(err) => return Err(format!("is not a valid PEM file ({err})")),
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of(url).unwrap()
    }

    #[test]
    fn proxies_as_curl_chooses_them_and_never_for_loopback() {
        let env = ProxyEnv {
            https: Some("http://proxy:3128".into()),
            http: Some("http://plain-proxy:3128".into()),
            all: None,
            no_proxy: Some("internal.example, .corp.example,10.1.2.3,registry.test:5000".into()),
        };
        let cases = [
            ("https://ghcr.io", Some("http://proxy:3128")),
            (
                "http://registry.example:5000",
                Some("http://plain-proxy:3128"),
            ),
            ("http://127.0.0.1:5000", None),
            ("https://127.0.0.7:5000", None),
            ("http://localhost:5000", None),
            ("http://[::1]:5000", None),
            ("https://internal.example", None),
            ("https://a.internal.example", None),
            ("https://notinternal.example", Some("http://proxy:3128")),
            ("https://x.corp.example", None),
            ("https://corp.example", None),
            ("http://10.1.2.3", None),
            ("http://registry.test:5000", None),
            ("http://registry.test:5001", Some("http://plain-proxy:3128")),
        ];
        for (url, want) in cases {
            assert_eq!(env.proxy_for(&origin(url)), want, "{url}");
        }
        let all = ProxyEnv {
            all: Some("http://all:1".into()),
            ..ProxyEnv::default()
        };
        assert_eq!(
            all.proxy_for(&origin("https://ghcr.io")),
            Some("http://all:1")
        );
        assert_eq!(all.proxy_for(&origin("http://127.0.0.1:1")), None);
        let star = ProxyEnv {
            no_proxy: Some("*".into()),
            ..all.clone()
        };
        assert_eq!(star.proxy_for(&origin("https://ghcr.io")), None);
        assert_eq!(
            ProxyEnv::default().proxy_for(&origin("https://ghcr.io")),
            None
        );
    }

    #[test]
    fn roots_come_from_the_variables_or_the_system() {
        let dir = std::env::temp_dir().join(format!("xtask-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let system = ["/etc/ssl/certs/ca-certificates.crt"];
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = load_roots(Some(empty.clone()), None, &system)
            .err()
            .unwrap();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = load_roots(Some(dir.join("missing.pem")), None, &system)
            .err()
            .unwrap();
        assert!(
            err.contains("SSL_CERT_FILE=") && err.contains("cannot be read"),
            "{err}"
        );
        // No store at all: Mozilla's roots.
        assert!(matches!(
            load_roots(None, None, &["/nonexistent"]),
            Ok(RootCerts::WebPki)
        ));
        if Path::new(system[0]).is_file() {
            match load_roots(None, None, &system) {
                Ok(RootCerts::Specific(certs)) => assert!(certs.len() > 10, "{}", certs.len()),
                other => panic!("system bundle not read: {other:?}"),
            }
            // SSL_CERT_FILE replaces the system store rather than adding to it, as OpenSSL does.
            let one = dir.join("one.pem");
            let bundle = std::fs::read_to_string(system[0]).unwrap();
            let first = bundle
                .split_inclusive("-----END CERTIFICATE-----\n")
                .next()
                .unwrap();
            std::fs::write(&one, first).unwrap();
            match load_roots(Some(one.clone()), None, &system) {
                Ok(RootCerts::Specific(certs)) => assert_eq!(certs.len(), 1),
                other => panic!("{other:?}"),
            }
            // A hashed directory that links the same CA under several names, and holds the bundle itself: one
            // trust anchor, each file read once.
            let hashed = dir.join("hashed");
            std::fs::create_dir_all(&hashed).unwrap();
            std::fs::copy(&one, hashed.join("ca.pem")).unwrap();
            std::os::unix::fs::symlink(hashed.join("ca.pem"), hashed.join("5f618aec.0")).unwrap();
            std::fs::copy(&one, hashed.join("bundle.crt")).unwrap();
            std::fs::write(hashed.join("README"), "not a certificate").unwrap();
            match load_roots(
                Some(hashed.join("bundle.crt")),
                Some(hashed.clone()),
                &system,
            ) {
                Ok(RootCerts::Specific(certs)) => assert_eq!(certs.len(), 1),
                other => panic!("{other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
