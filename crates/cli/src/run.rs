//! `run`, `env` and the confined exec: starting an agent that holds only tokens, talks
//! through the broker's proxy, and cannot read the data directory.

use crate::args::{EnvArgs, ExecConfinedArgs, RunArgs};
use crate::commands::{Ctx, RunningBroker, start_broker};
use crate::failure::Failure;
use sequester_model::{AgentName, ErrorCode, TenantId, TokenState, parse_duration};
use sequester_store::{SqliteStore, Store};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `DATA_DIR/broker.json`: where a running broker serves, so that `run` and `env` use it.
#[derive(Debug, Serialize, Deserialize)]
struct Runtime {
    pid: u32,
    gateway: String,
    proxy: String,
    ca: PathBuf,
}

fn runtime_path(ctx: &Ctx) -> PathBuf {
    ctx.data.root().join("broker.json")
}

pub fn write_runtime(ctx: &Ctx, broker: &RunningBroker) {
    let info = Runtime {
        pid: std::process::id(),
        gateway: broker.gateway.to_string(),
        proxy: broker.proxy.to_string(),
        ca: broker.ca_path.clone(),
    };
    let path = runtime_path(ctx);
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(&info)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot record the broker's addresses; `sequester run` will start its own broker");
    }
}

pub fn remove_runtime(ctx: &Ctx) {
    let path = runtime_path(ctx);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(info) = serde_json::from_str::<Runtime>(&text)
        && info.pid == std::process::id()
    {
        let _ = std::fs::remove_file(path);
    }
}

/// The broker serving this data directory, if its process is alive and its proxy answers.
fn running_broker(ctx: &Ctx) -> Option<Runtime> {
    let info: Runtime =
        serde_json::from_str(&std::fs::read_to_string(runtime_path(ctx)).ok()?).ok()?;
    if !Path::new(&format!("/proc/{}", info.pid)).exists() {
        return None;
    }
    let addr: std::net::SocketAddr = info.proxy.parse().ok()?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    Some(info)
}

/// The system's CA bundle plus the broker's CA, for clients that replace rather than extend
/// their trust store.
fn ca_bundle(broker_ca: &Path, dir: &Path) -> Result<PathBuf, Failure> {
    let io =
        |e: std::io::Error| Failure::new(ErrorCode::Io, format!("cannot write the CA bundle: {e}"));
    let mut pem = Vec::new();
    for system in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(bytes) = std::fs::read(system) {
            pem.extend(bytes);
            pem.push(b'\n');
            break;
        }
    }
    pem.extend(std::fs::read(broker_ca).map_err(io)?);
    let path = dir.join("ca-bundle.pem");
    std::fs::write(&path, pem).map_err(io)?;
    Ok(path)
}

/// What an agent is given: its environment, and what to revoke afterwards.
struct AgentEnv {
    vars: Vec<(String, String)>,
    key_id: sequester_model::AgentKeyId,
    token_ids: Vec<sequester_model::TokenId>,
}

async fn agent_env(
    ctx: &Ctx,
    store: &SqliteStore,
    tenant: &TenantId,
    agent: &AgentName,
    proxy: &str,
    bundle: &Path,
    ttl: Duration,
) -> Result<AgentEnv, Failure> {
    let bundle = bundle.display().to_string();
    let mut vars = vec![];
    for name in ["NO_PROXY", "no_proxy"] {
        vars.push((name.to_owned(), String::new()));
    }
    for name in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
    ] {
        vars.push((name.to_owned(), bundle.clone()));
    }
    vars.push(("SEQUESTER_AGENT".to_owned(), agent.to_string()));
    // A fresh token in each secret's variable, for every secret the agent may use.
    let mut granted: Vec<sequester_model::SecretName> = store
        .list_tokens(tenant)
        .await?
        .into_iter()
        .filter(|t| &t.agent == agent && t.state(ctx.now) == TokenState::Active)
        .map(|t| t.secret)
        .collect();
    granted.sort();
    granted.dedup();
    let mut token_ids = Vec::new();
    for name in granted {
        let secret = store.secret(tenant, &name).await?;
        let Some(var) = secret.env_var.clone() else {
            continue;
        };
        match store
            .issue_token(tenant, agent, &name, Some(ttl), ctx.now)
            .await
        {
            Ok((token, meta)) => {
                vars.push((var, token.reveal().to_owned()));
                token_ids.push(meta.id);
            }
            Err(e) => {
                tracing::warn!(secret = %name, code = %e.code(), "no token for this secret: {e}")
            }
        }
    }
    // The key last: a broker snapshot that knows the key knows the tokens too, so waiting
    // for the key to be accepted is enough.
    let (key, key_meta) = store
        .issue_agent_key(tenant, agent, Some(ttl), ctx.now)
        .await?;
    let proxy_url = format!("http://{}:{}@{proxy}", agent, key.reveal());
    for name in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "https_proxy",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        vars.push((name.to_owned(), proxy_url.clone()));
    }
    Ok(AgentEnv {
        vars,
        key_id: key_meta.id,
        token_ids,
    })
}

async fn revoke(ctx: &Ctx, store: &SqliteStore, tenant: &TenantId, env: &AgentEnv) {
    if let Err(e) = store.revoke_agent_key(tenant, &env.key_id, ctx.now).await {
        tracing::warn!(error = %e, "could not revoke the run's agent key");
    }
    for id in &env.token_ids {
        if let Err(e) = store.revoke_token(tenant, id, ctx.now).await {
            tracing::warn!(error = %e, "could not revoke one of the run's tokens");
        }
    }
}

/// Waits (up to 3 s) until the broker's snapshot knows the new agent key (and so the tokens
/// issued before it), so the command's first request is not refused. The probe is an
/// origin-form request: 407 while the key is unknown, 400 once it is, and no receipt.
async fn wait_until_accepted(proxy: &str, env: &AgentEnv) {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(url) = env
        .vars
        .iter()
        .find(|(k, _)| k == "HTTPS_PROXY")
        .map(|(_, v)| v.clone())
    else {
        return;
    };
    let Some(cred) = url
        .strip_prefix("http://")
        .and_then(|r| r.rsplit_once('@'))
        .map(|(c, _)| c.to_owned())
    else {
        return;
    };
    let auth = base64::engine::general_purpose::STANDARD.encode(cred.as_bytes());
    let probe = format!(
        "GET / HTTP/1.1\r\nHost: sequester.invalid\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(proxy).await
            && s.write_all(probe.as_bytes()).await.is_ok()
        {
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf).await
                && !buf[..n].starts_with(b"HTTP/1.1 407")
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!("the broker did not pick up the agent's key within 3 s");
}

/// `sequester run --agent A -- CMD ARGS…`: returns the command's exit status.
pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<i32, Failure> {
    let agent = AgentName::parse(&args.agent)?;
    let store = ctx.open().await?;
    let result = run_with(ctx, &store, &agent, args).await;
    store.close().await;
    result
}

async fn run_with(
    ctx: &Ctx,
    store: &SqliteStore,
    agent: &AgentName,
    args: RunArgs,
) -> Result<i32, Failure> {
    let tenant = ctx.tenant_id(store).await?;
    store.agent(&tenant, agent).await?;
    // Use the broker serving this directory, or start one in this process.
    let (own, proxy, ca) = match running_broker(ctx) {
        Some(info) => (None, info.proxy, info.ca),
        None => {
            let mut serve = args.serve;
            serve.listen.get_or_insert_with(|| "127.0.0.1:0".to_owned());
            serve
                .proxy_listen
                .get_or_insert_with(|| "127.0.0.1:0".to_owned());
            let broker = start_broker(ctx, &serve, store).await?;
            let (proxy, ca) = (broker.proxy.to_string(), broker.ca_path.clone());
            (Some(broker), proxy, ca)
        }
    };
    let scratch = std::env::temp_dir().join(format!("sequester-run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| {
        Failure::new(
            ErrorCode::Io,
            format!("cannot create {}: {e}", scratch.display()),
        )
    })?;
    let bundle = ca_bundle(&ca, &scratch)?;
    let env = agent_env(
        ctx,
        store,
        &tenant,
        agent,
        &proxy,
        &bundle,
        Duration::from_secs(24 * 3600),
    )
    .await?;
    wait_until_accepted(&proxy, &env).await;

    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(
            ErrorCode::Io,
            format!("cannot find the sequester binary: {e}"),
        )
    })?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("__exec-confined")
        .arg("--deny")
        .arg(ctx.data.root());
    if let Some(pf) = std::env::var_os("SEQUESTER_PASSPHRASE_FILE") {
        cmd.arg("--deny").arg(pf);
    }
    cmd.arg("--").args(&args.command);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SEQUESTER_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let status = match cmd.spawn() {
        Ok(mut child) => wait_forwarding_signals(&mut child).await,
        Err(e) => Err(Failure::new(
            ErrorCode::Io,
            format!("cannot start the command: {e}"),
        )),
    };
    revoke(ctx, store, &tenant, &env).await;
    let _ = std::fs::remove_dir_all(&scratch);
    if let Some(broker) = own {
        broker.stop().await?;
    }
    status
}

/// Waits for the child, passing SIGINT, SIGTERM and SIGHUP on to it.
async fn wait_forwarding_signals(child: &mut tokio::process::Child) -> Result<i32, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let forward = tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Failure::new(ErrorCode::Io, format!("waiting for the command: {e}")))?;
                use std::os::unix::process::ExitStatusExt as _;
                return Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(1)));
            }
            Some(()) = async { match &mut int { Some(s) => s.recv().await, None => std::future::pending().await } } => rustix::process::Signal::INT,
            Some(()) = async { match &mut term { Some(s) => s.recv().await, None => std::future::pending().await } } => rustix::process::Signal::TERM,
            Some(()) = async { match &mut hup { Some(s) => s.recv().await, None => std::future::pending().await } } => rustix::process::Signal::HUP,
        };
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, forward);
        }
    }
}

/// `sequester env --agent A`: shell settings using the running broker.
pub async fn env(ctx: &Ctx, args: &EnvArgs) -> Result<(), Failure> {
    let agent = AgentName::parse(&args.agent)?;
    let ttl = parse_duration(&args.ttl)?;
    let Some(info) = running_broker(ctx) else {
        return Err(Failure::new(
            ErrorCode::StorageUnavailable,
            "no broker is serving this data directory; start one with `sequester serve` (or use `sequester run`)",
        ));
    };
    let store = ctx.open().await?;
    let result = async {
        let tenant = ctx.tenant_id(&store).await?;
        store.agent(&tenant, &agent).await?;
        let dir = ctx
            .data
            .root()
            .parent()
            .map_or_else(std::env::temp_dir, Path::to_path_buf)
            .join("sequester-env");
        std::fs::create_dir_all(&dir).map_err(|e| {
            Failure::new(
                ErrorCode::Io,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        let bundle = ca_bundle(&info.ca, &dir)?;
        agent_env(ctx, &store, &tenant, &agent, &info.proxy, &bundle, ttl).await
    }
    .await;
    store.close().await;
    let env = result?;
    if ctx.json {
        crate::output::json(
            &env.vars
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
    } else {
        for (k, v) in &env.vars {
            println!("export {k}='{}'", v.replace('\'', "'\\''"));
        }
    }
    Ok(())
}

/// `sequester __exec-confined --deny PATH… -- CMD ARGS…`, run by `run` in the child: confine
/// this (single-threaded) process with Landlock, then become CMD.
pub fn exec_confined(args: &ExecConfinedArgs) -> i32 {
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("error[invalid_request]: no command given");
        return 2;
    };
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let result = sequester_confine::exec_confined(&args.deny, program, rest, &env, |status| {
        match status {
            sequester_confine::ConfineStatus::FullyEnforced => {}
            other => eprintln!(
                "sequester: WARNING: the agent is not fully confined ({other}); it may be able to read the data directory. Run the broker as its own user or on its own host."
            ),
        }
        true
    });
    match result {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("error[{}]: {e}", e.code());
            127
        }
    }
}
