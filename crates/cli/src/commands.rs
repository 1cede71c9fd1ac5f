//! One function per command: parse input into typed values, call the store, print.

use crate::args::{
    AgentCommand, AgentKeyCommand, Cli, Command, EgressCommand, InitArgs, ReceiptsArgs,
    ReceiptsCommand, SecretAddArgs, SecretCommand, ServeArgs, ServiceCommand, TenantCommand,
    TenantScoped, TokenCommand,
};
use crate::failure::Failure;
use crate::input::{read_passphrase, read_value};
use crate::output::{fields, json, opt_time, table};
use sequester_model::{
    AgentName, BaseUrl, ErrorCode, HostPattern, InjectionRule, SecretMeta, SecretName, SecretState,
    ServiceName, TenantId, TenantName, Timestamp, TokenId, TokenMeta, TokenState, VersionMeta,
    VersionState, parse_duration,
};
use sequester_proxy::log_redact::LogRedactor;
use sequester_store::{DataDir, KeyMode, NewSecret, SqliteStore, Store, StoreError};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

pub struct Ctx {
    pub(crate) redactor: Arc<LogRedactor>,
    pub(crate) data: DataDir,
    passphrase_file: Option<PathBuf>,
    tenant: String,
    pub(crate) json: bool,
    pub(crate) now: Timestamp,
}

fn now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
}

impl Ctx {
    pub fn new(cli: &Cli) -> Result<Self, Failure> {
        let root = match &cli.data_dir {
            Some(dir) => dir.clone(),
            None => DataDir::default_root().ok_or_else(|| {
                Failure::new(
                    ErrorCode::NotInitialized,
                    "cannot find a home data directory; give --data-dir or SEQUESTER_DATA_DIR",
                )
            })?,
        };
        Ok(Self {
            redactor: Arc::new(LogRedactor::new()),
            data: DataDir::new(root),
            passphrase_file: cli.passphrase_file.clone(),
            tenant: cli.tenant.clone(),
            json: cli.json,
            now: now(),
        })
    }

    fn passphrase(
        &self,
    ) -> impl Fn(bool) -> Result<Zeroizing<Vec<u8>>, StoreError> + Send + Sync + '_ {
        move |confirm| read_passphrase(self.passphrase_file.as_deref(), confirm)
    }

    pub(crate) async fn open(&self) -> Result<SqliteStore, Failure> {
        Ok(self.data.open(&self.passphrase(), self.now).await?)
    }

    pub(crate) async fn tenant_id(&self, store: &SqliteStore) -> Result<TenantId, Failure> {
        let name = TenantName::parse(&self.tenant)?;
        Ok(store.tenant(&name).await?.id)
    }
}

/// Runs a command; returns the process exit status on success (non-zero only for `run`, whose
/// status is its command's).
pub async fn run(cli: Cli, redactor: Arc<LogRedactor>) -> Result<i32, Failure> {
    if let Command::Scan(args) = &cli.command {
        return crate::detect::scan(args, cli.json).map(|()| 0);
    }
    let ctx = Ctx::new(&cli)?;
    let ctx = Ctx { redactor, ..ctx };
    let cli = match cli.command {
        Command::Run(args) => return crate::run::run(&ctx, args).await,
        Command::Env(args) => return crate::run::env(&ctx, &args).await.map(|()| 0),
        other => other,
    };
    dispatch(&ctx, cli).await.map(|()| 0)
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<(), Failure> {
    match command {
        Command::Init(args) => {
            init(ctx, &args).await?.close().await;
            Ok(())
        }
        Command::Up(args) => {
            let store = if ctx.data.is_initialized() {
                ctx.open().await?
            } else {
                init(ctx, &InitArgs { passphrase: false }).await?
            };
            serve(ctx, &args, store).await
        }
        Command::Serve(args) => {
            let store = ctx.open().await?;
            serve(ctx, &args, store).await
        }
        Command::Rekey => rekey(ctx).await,
        Command::Scan(_) | Command::Run(_) | Command::Env(_) | Command::ExecConfined(_) => Ok(()),
        Command::Redact(args) => crate::detect::redact(ctx, &args).await,
        Command::Tenant(cmd) => tenant(ctx, cmd).await,
        Command::InTenant(cmd) => {
            let store = ctx.open().await?;
            let result = in_tenant(ctx, &store, cmd).await;
            store.close().await;
            result
        }
    }
}

async fn in_tenant(ctx: &Ctx, store: &SqliteStore, cmd: TenantScoped) -> Result<(), Failure> {
    let tenant = ctx.tenant_id(store).await?;
    match cmd {
        TenantScoped::Service(cmd) => service(ctx, store, tenant, cmd).await,
        TenantScoped::Receipts(args) => receipts(ctx, store, tenant, args).await,
        TenantScoped::Egress(cmd) => egress(ctx, store, tenant, cmd).await,
        TenantScoped::Agent(cmd) => agent(ctx, store, tenant, cmd).await,
        TenantScoped::Secret(cmd) => secret(ctx, store, tenant, cmd).await,
        TenantScoped::Token(cmd) => token(ctx, store, tenant, cmd).await,
    }
}

async fn init(ctx: &Ctx, args: &InitArgs) -> Result<SqliteStore, Failure> {
    let mode = if args.passphrase {
        KeyMode::Passphrase
    } else {
        KeyMode::KeyFile
    };
    let store = ctx.data.init(mode, &ctx.passphrase(), ctx.now).await?;
    let root = ctx.data.root().display().to_string();
    if ctx.json {
        json(&serde_json::json!({
            "data_dir": root,
            "key_mode": if args.passphrase { "passphrase" } else { "file" },
            "key_file": (!args.passphrase).then(|| ctx.data.key_path().display().to_string()),
            "tenant": "default",
        }));
    } else {
        println!("Initialised Sequester in {root}");
        if args.passphrase {
            println!(
                "  master key: derived from your passphrase (Argon2id); it is needed at every start"
            );
        } else {
            println!(
                "  master key: {} (mode 0600). Back it up: without it no secret can be opened.",
                ctx.data.key_path().display()
            );
        }
        println!("  tenant:     default");
        println!();
        println!("Next: printf %s \"$KEY\" | sequester secret add NAME --host api.example.com");
    }
    Ok(store)
}

async fn rekey(ctx: &Ctx) -> Result<(), Failure> {
    let store = ctx.open().await?;
    let result = ctx.data.rekey(&store, &ctx.passphrase()).await;
    store.close().await;
    let count = result?;
    if ctx.json {
        json(&serde_json::json!({ "rewrapped_tenant_keys": count }));
    } else {
        println!("Master key replaced; {count} tenant key(s) re-wrapped.");
        if ctx.passphrase_file.is_none() && ctx.data.key_path().exists() {
            println!(
                "Back up the new {} now; the old key no longer opens this directory.",
                ctx.data.key_path().display()
            );
        }
    }
    Ok(())
}

fn load_config(ctx: &Ctx, args: &ServeArgs) -> Result<sequester_proxy::Config, Failure> {
    let default_path = ctx.data.root().join("sequester.toml");
    let mut config = match &args.config {
        Some(path) => sequester_proxy::Config::load(path),
        None if default_path.exists() => sequester_proxy::Config::load(&default_path),
        None => Ok(sequester_proxy::Config::default()),
    }
    .map_err(|e| Failure::new(e.code(), e.to_string()))?;
    if let Some(listen) = &args.listen {
        config.listen = Some(listen.clone());
    }
    if let Some(ca) = &args.upstream_ca {
        config.upstream_ca = Some(ca.clone());
    }
    if let Some(listen) = &args.proxy_listen {
        config.proxy_listen = Some(listen.clone());
    }
    Ok(config)
}

async fn serve(ctx: &Ctx, args: &ServeArgs, store: SqliteStore) -> Result<(), Failure> {
    let result = serve_with(ctx, args, &store).await;
    store.close().await;
    result
}

/// A broker running in this process: the gateway and the proxy, until `stop`.
pub(crate) struct RunningBroker {
    pub(crate) gateway: std::net::SocketAddr,
    pub(crate) proxy: std::net::SocketAddr,
    pub(crate) ca_path: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningBroker {
    /// Stops accepting, lets in-flight requests finish, flushes receipts, closes the store.
    pub(crate) async fn stop(self) -> Result<(), Failure> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| Failure::new(ErrorCode::Internal, format!("the broker task failed: {e}")))?
            .map_err(|e| Failure::new(ErrorCode::Io, format!("server failed: {e}")))
    }
}

/// How often the broker checkpoints the database's write-ahead log (passively: receipt
/// commits never wait for it), and past what size the log is restarted. A passive checkpoint
/// cannot restart a log that is written without a pause, so under sustained load the log
/// reaches the limit; the receipt writer then restarts it between two batches, copying only
/// what the last passive checkpoint left (milliseconds), and reuses the file in place.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
const CHECKPOINT_RESTART_ABOVE: u64 = 32 * 1024 * 1024;

/// Binds the gateway and the proxy and starts serving in the background.
pub(crate) async fn start_broker(
    ctx: &Ctx,
    args: &ServeArgs,
    store: &SqliteStore,
) -> Result<RunningBroker, Failure> {
    // Same-user processes (an agent with a shell) must not ptrace the broker or read its
    // memory, where keys and values live for the moment of use.
    if let Err(e) = sequester_confine::make_undumpable() {
        tracing::warn!(error = %e, "cannot mark the broker non-dumpable; same-user processes could read its memory");
    }
    let config = load_config(ctx, args)?;
    let listen = config
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8787".to_owned());
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        Failure::new(
            ErrorCode::InvalidConfig,
            format!("listen address {listen:?} is not IP:PORT, such as 127.0.0.1:8787"),
        )
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(ErrorCode::Io, format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| {
        Failure::new(
            ErrorCode::Io,
            format!("cannot read the listening address: {e}"),
        )
    })?;
    let proxy_listen = config
        .proxy_listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8788".to_owned());
    let proxy_addr: std::net::SocketAddr = proxy_listen.parse().map_err(|_| {
        Failure::new(
            ErrorCode::InvalidConfig,
            format!("proxy listen address {proxy_listen:?} is not IP:PORT, such as 127.0.0.1:8788"),
        )
    })?;
    let proxy_listener = tokio::net::TcpListener::bind(proxy_addr)
        .await
        .map_err(|e| Failure::new(ErrorCode::Io, format!("cannot listen on {proxy_addr}: {e}")))?;
    let proxy_local = proxy_listener.local_addr().map_err(|e| {
        Failure::new(
            ErrorCode::Io,
            format!("cannot read the listening address: {e}"),
        )
    })?;
    let (ca, ca_path) = crate::intercept::ensure_ca(ctx, store).await?;
    let control: Arc<SqliteStore> = Arc::new(store.reopen().await?);
    let audit: Arc<SqliteStore> = Arc::new(store.reopen().await?);
    // With fsync'd receipts (the default), receipt commits never pause to checkpoint the WAL:
    // a connection of its own does that. With `sync = "normal"` the off-connection
    // checkpointer measured worse (commits stalled for about half a second at times, cause
    // not yet understood), so SQLite's own checkpoints on the receipt connection stay.
    let checkpointer = if config.audit.sync == sequester_proxy::config::AuditSync::Normal {
        audit.relax_durability().await?;
        None
    } else {
        // The receipt writer restarts the log itself past the limit (it is the only writer,
        // so that costs milliseconds); the checkpointer's own truncation, which would hold
        // commits through SQLite's busy handler, is only a backstop for when readers kept
        // the writer from restarting it for long.
        let checkpointer = store
            .start_checkpointer(CHECKPOINT_EVERY, 8 * CHECKPOINT_RESTART_ABOVE)
            .await?;
        audit.manual_checkpoints().await?;
        audit.restart_wal_above(CHECKPOINT_RESTART_ABOVE);
        Some(checkpointer)
    };
    let (plane, background) = sequester_proxy::DataPlane::start(
        control.clone(),
        audit.clone(),
        config,
        ctx.redactor.shared_detector(),
        Arc::clone(&ctx.redactor),
        Some(ca),
    )
    .await
    .map_err(|e| Failure::new(e.code(), e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let task = tokio::spawn(async move {
        let (served, proxied) = tokio::join!(
            sequester_proxy::serve(listener, Arc::clone(&plane), stopped(stop_rx.clone())),
            sequester_proxy::serve_proxy(proxy_listener, plane, stopped(stop_rx)),
        );
        background.shutdown().await;
        if let Some(checkpointer) = checkpointer {
            checkpointer.stop().await;
        }
        control.close().await;
        audit.close().await;
        served.and(proxied)
    });
    Ok(RunningBroker {
        gateway: local,
        proxy: proxy_local,
        ca_path,
        stop: stop_tx,
        task,
    })
}

async fn serve_with(ctx: &Ctx, args: &ServeArgs, store: &SqliteStore) -> Result<(), Failure> {
    let broker = start_broker(ctx, args, store).await?;
    let (local, proxy_local, ca_path) = (broker.gateway, broker.proxy, broker.ca_path.clone());
    tracing::info!(listen = %local, proxy = %proxy_local, data_dir = %ctx.data.root().display(), "sequester ready");
    crate::run::write_runtime(ctx, &broker);
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"event": "ready", "listen": local.to_string(), "proxy": proxy_local.to_string(), "ca": ca_path.display().to_string(), "data_dir": ctx.data.root().display().to_string()})
        );
    } else {
        println!(
            "sequester ready: gateway on http://{local}, proxy on http://{proxy_local} (CA {}; data dir {})",
            ca_path.display(),
            ctx.data.root().display()
        );
    }
    shutdown_signal().await;
    let result = broker.stop().await;
    crate::run::remove_runtime(ctx);
    result?;
    tracing::info!("sequester stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop the broker with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn tenant(ctx: &Ctx, cmd: TenantCommand) -> Result<(), Failure> {
    let store = ctx.open().await?;
    let result = async {
        match cmd {
            TenantCommand::Add { name } => {
                let name = TenantName::parse(&name)?;
                let t = store.create_tenant(&name, ctx.now).await?;
                if ctx.json {
                    json(&t);
                } else {
                    println!("Added tenant {} ({})", t.name, t.id);
                }
            }
            TenantCommand::List => {
                let tenants = store.list_tenants().await?;
                if ctx.json {
                    json(&tenants);
                } else {
                    let rows = tenants
                        .iter()
                        .map(|t| vec![t.name.to_string(), t.id.to_string(), t.created_at.rfc3339()])
                        .collect::<Vec<_>>();
                    table(&["NAME", "ID", "CREATED"], &rows);
                }
            }
        }
        Ok::<_, Failure>(())
    }
    .await;
    store.close().await;
    result
}

async fn agent(
    ctx: &Ctx,
    store: &SqliteStore,
    tenant: TenantId,
    cmd: AgentCommand,
) -> Result<(), Failure> {
    #[derive(Serialize)]
    struct View<'a> {
        #[serde(flatten)]
        agent: &'a sequester_model::Agent,
        state: sequester_model::AgentState,
    }
    match cmd {
        AgentCommand::Add { name } => {
            let name = AgentName::parse(&name)?;
            let a = store.create_agent(&tenant, &name, ctx.now).await?;
            if ctx.json {
                json(&View {
                    state: a.state(),
                    agent: &a,
                });
            } else {
                println!("Added agent {} ({}) in tenant {}", a.name, a.id, ctx.tenant);
            }
        }
        AgentCommand::List => {
            let agents = store.list_agents(&tenant).await?;
            if ctx.json {
                json(
                    &agents
                        .iter()
                        .map(|a| View {
                            state: a.state(),
                            agent: a,
                        })
                        .collect::<Vec<_>>(),
                );
            } else {
                let rows = agents
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.to_string(),
                            a.id.to_string(),
                            match a.state() {
                                sequester_model::AgentState::Active => "active".to_owned(),
                                sequester_model::AgentState::Disabled => "disabled".to_owned(),
                            },
                            a.created_at.rfc3339(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["NAME", "ID", "STATE", "CREATED"], &rows);
            }
        }
        AgentCommand::Key(cmd) => agent_key(ctx, store, tenant, cmd).await?,
        AgentCommand::Disable { name } => {
            let name = AgentName::parse(&name)?;
            let a = store.disable_agent(&tenant, &name, ctx.now).await?;
            if ctx.json {
                json(&View {
                    state: a.state(),
                    agent: &a,
                });
            } else {
                println!("Disabled agent {}; its tokens no longer work.", a.name);
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct SecretView<'a> {
    #[serde(flatten)]
    meta: &'a SecretMeta,
    state: SecretState,
}

fn print_secret(ctx: &Ctx, meta: &SecretMeta) {
    let state = meta.state(ctx.now);
    if ctx.json {
        json(&SecretView { meta, state });
        return;
    }
    fields(&[
        ("name", meta.name.to_string()),
        ("tenant", ctx.tenant.clone()),
        ("state", state.as_str().to_owned()),
        (
            "hosts",
            meta.hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("inject", inject_label(meta.injection.as_ref())),
        (
            "env",
            meta.env_var.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "bodies",
            if meta.body_substitution {
                "substituted (proxy)"
            } else {
                "not inspected"
            }
            .to_owned(),
        ),
        ("version", meta.current_version.to_string()),
        ("created", meta.created_at.rfc3339()),
        ("rotated", opt_time(meta.rotated_at)),
        ("expires", opt_time(meta.expires_at)),
        ("revoked", opt_time(meta.revoked_at)),
        ("id", meta.id.to_string()),
    ]);
}

fn inject_label(rule: Option<&InjectionRule>) -> String {
    rule.map_or_else(|| "service default".to_owned(), ToString::to_string)
}

fn parse_secret_add(ctx: &Ctx, args: &SecretAddArgs) -> Result<NewSecret, Failure> {
    let name = SecretName::parse(&args.name)?;
    let mut hosts = Vec::with_capacity(args.hosts.len());
    for h in &args.hosts {
        let host = HostPattern::parse(h)?;
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    let injection = args
        .inject
        .as_deref()
        .map(InjectionRule::parse)
        .transpose()?;
    let expires_at = args
        .expires_in
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| ctx.now.plus(d));
    let env_var = match &args.env_var {
        Some(var)
            if !var.is_empty()
                && var.len() <= 128
                && var
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !var.as_bytes()[0].is_ascii_digit() =>
        {
            Some(var.clone())
        }
        Some(var) => {
            return Err(Failure::new(
                ErrorCode::InvalidName,
                format!(
                    "--env {var:?} is not an environment variable name; use A-Z, 0-9 and _, not starting with a digit"
                ),
            ));
        }
        None => None,
    };
    Ok(NewSecret {
        name,
        hosts,
        injection,
        expires_at,
        env_var,
        body_substitution: args.body_substitution,
    })
}

fn parse_grace(grace: Option<&str>) -> Result<Duration, Failure> {
    Ok(grace
        .map(parse_duration)
        .transpose()?
        .unwrap_or(Duration::ZERO))
}

async fn secret(
    ctx: &Ctx,
    store: &SqliteStore,
    tenant: TenantId,
    cmd: SecretCommand,
) -> Result<(), Failure> {
    match cmd {
        SecretCommand::Add(args) => {
            // Every argument is checked before the value is read, so a typo costs no paste.
            let new = parse_secret_add(ctx, &args)?;
            let value = read_value(new.name.as_str())?;
            let meta = store.add_secret(&tenant, &new, value, ctx.now).await?;
            if ctx.json {
                print_secret(ctx, &meta);
            } else {
                println!(
                    "Added secret {} (version 1) for {}",
                    meta.name,
                    meta.hosts
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        SecretCommand::List => {
            let secrets = store.list_secrets(&tenant).await?;
            if ctx.json {
                json(
                    &secrets
                        .iter()
                        .map(|meta| SecretView {
                            meta,
                            state: meta.state(ctx.now),
                        })
                        .collect::<Vec<_>>(),
                );
            } else {
                let rows = secrets
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.to_string(),
                            s.state(ctx.now).as_str().to_owned(),
                            s.current_version.to_string(),
                            s.hosts
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                            inject_label(s.injection.as_ref()),
                            opt_time(s.expires_at),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(
                    &["NAME", "STATE", "VERSION", "HOSTS", "INJECT", "EXPIRES"],
                    &rows,
                );
            }
        }
        SecretCommand::Show { name } => {
            let name = SecretName::parse(&name)?;
            let meta = store.secret(&tenant, &name).await?;
            print_secret(ctx, &meta);
        }
        SecretCommand::Rotate { name, grace } => {
            let name = SecretName::parse(&name)?;
            let grace = parse_grace(grace.as_deref())?;
            // Fail on an unknown or revoked secret before asking for a value.
            let current = store.secret(&tenant, &name).await?;
            if current.state(ctx.now) != SecretState::Active {
                return Err(match current.state(ctx.now) {
                    SecretState::Revoked => StoreError::SecretRevoked {
                        name: name.to_string(),
                    },
                    _ => StoreError::SecretExpired {
                        name: name.to_string(),
                    },
                }
                .into());
            }
            let value = read_value(name.as_str())?;
            let meta = store
                .rotate_secret(&tenant, &name, value, grace, ctx.now)
                .await?;
            if ctx.json {
                print_secret(ctx, &meta);
            } else if grace.is_zero() {
                println!(
                    "Rotated secret {} to version {}; the previous value no longer works.",
                    meta.name, meta.current_version
                );
            } else {
                println!(
                    "Rotated secret {} to version {}; version {} keeps working until {}.",
                    meta.name,
                    meta.current_version,
                    meta.current_version - 1,
                    ctx.now.plus(grace)
                );
            }
        }
        SecretCommand::Revoke { name } => {
            let name = SecretName::parse(&name)?;
            let meta = store.revoke_secret(&tenant, &name, ctx.now).await?;
            if ctx.json {
                print_secret(ctx, &meta);
            } else {
                println!(
                    "Revoked secret {}; no version of it will be used again.",
                    meta.name
                );
            }
        }
        SecretCommand::Rm { name } => {
            let name = SecretName::parse(&name)?;
            store.remove_secret(&tenant, &name).await?;
            if ctx.json {
                json(&serde_json::json!({ "removed": name }));
            } else {
                println!("Removed secret {name} with its versions, grants and tokens.");
            }
        }
        SecretCommand::History { name } => {
            let name = SecretName::parse(&name)?;
            let versions = store.secret_history(&tenant, &name).await?;
            #[derive(Serialize)]
            struct View<'a> {
                #[serde(flatten)]
                v: &'a VersionMeta,
                state: VersionState,
            }
            if ctx.json {
                json(
                    &versions
                        .iter()
                        .map(|v| View {
                            v,
                            state: v.state(ctx.now),
                        })
                        .collect::<Vec<_>>(),
                );
            } else {
                let rows = versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            match v.state(ctx.now) {
                                VersionState::Current => "current",
                                VersionState::Grace => "grace",
                                VersionState::Retired => "retired",
                            }
                            .to_owned(),
                            v.created_at.rfc3339(),
                            opt_time(v.retired_at),
                            opt_time(v.usable_until),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(
                    &["VERSION", "STATE", "CREATED", "RETIRED", "USABLE UNTIL"],
                    &rows,
                );
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct TokenView<'a> {
    #[serde(flatten)]
    meta: &'a TokenMeta,
    state: TokenState,
}

fn token_state(s: TokenState) -> &'static str {
    match s {
        TokenState::Active => "active",
        TokenState::Revoked => "revoked",
        TokenState::Expired => "expired",
    }
}

async fn token(
    ctx: &Ctx,
    store: &SqliteStore,
    tenant: TenantId,
    cmd: TokenCommand,
) -> Result<(), Failure> {
    match cmd {
        TokenCommand::Issue { agent, secret, ttl } => {
            let agent = AgentName::parse(&agent)?;
            let secret = SecretName::parse(&secret)?;
            let ttl = ttl.as_deref().map(parse_duration).transpose()?;
            let (token, meta) = store
                .issue_token(&tenant, &agent, &secret, ttl, ctx.now)
                .await?;
            if ctx.json {
                #[derive(Serialize)]
                struct Issued<'a> {
                    token: &'a str,
                    #[serde(flatten)]
                    meta: &'a TokenMeta,
                }
                json(&Issued {
                    token: token.reveal(),
                    meta: &meta,
                });
            } else {
                println!("{}", token.reveal());
                eprintln!(
                    "Issued {} for agent {} to use secret {}{}. The token is shown only this once.",
                    meta.id,
                    meta.agent,
                    meta.secret,
                    meta.expires_at
                        .map(|e| format!(", expires {e}"))
                        .unwrap_or_default()
                );
            }
        }
        TokenCommand::List => {
            let tokens = store.list_tokens(&tenant).await?;
            if ctx.json {
                json(
                    &tokens
                        .iter()
                        .map(|meta| TokenView {
                            meta,
                            state: meta.state(ctx.now),
                        })
                        .collect::<Vec<_>>(),
                );
            } else {
                let rows = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            match t.kind {
                                sequester_model::TokenKind::Token => "token",
                                sequester_model::TokenKind::Placeholder => "placeholder",
                            }
                            .to_owned(),
                            t.agent.to_string(),
                            t.secret.to_string(),
                            token_state(t.state(ctx.now)).to_owned(),
                            t.created_at.rfc3339(),
                            opt_time(t.expires_at),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(
                    &["ID", "AGENT", "SECRET", "STATE", "CREATED", "EXPIRES"],
                    &rows,
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let id = TokenId::parse(&id).ok_or_else(|| {
                Failure::new(
                    ErrorCode::InvalidTokenId,
                    format!("{id:?} is not a token id; ids look like tok_ followed by 24 hex digits (see `sequester token list`)"),
                )
            })?;
            let meta = store.revoke_token(&tenant, &id, ctx.now).await?;
            if ctx.json {
                json(&TokenView {
                    meta: &meta,
                    state: meta.state(ctx.now),
                });
            } else {
                println!(
                    "Revoked token {} (agent {}, secret {}).",
                    meta.id, meta.agent, meta.secret
                );
            }
        }
    }
    Ok(())
}

async fn service(
    ctx: &Ctx,
    store: &SqliteStore,
    tenant: TenantId,
    cmd: ServiceCommand,
) -> Result<(), Failure> {
    match cmd {
        ServiceCommand::Add {
            name,
            base_url,
            inject,
        } => {
            let name = ServiceName::parse(&name)?;
            let base_url = BaseUrl::parse(&base_url)?;
            let inject = inject.as_deref().map(InjectionRule::parse).transpose()?;
            let s = store
                .add_service(&tenant, &name, &base_url, inject.as_ref(), ctx.now)
                .await?;
            if ctx.json {
                json(&s);
            } else {
                println!(
                    "Added service {}: /{}/… goes to {}",
                    s.name, s.name, s.base_url
                );
            }
        }
        ServiceCommand::List => {
            #[derive(Serialize)]
            struct View {
                name: String,
                base_url: String,
                inject: String,
                source: &'static str,
            }
            let mut views: Vec<View> = store
                .list_services(&tenant)
                .await?
                .into_iter()
                .map(|s| View {
                    name: s.name.to_string(),
                    base_url: s.base_url.to_string(),
                    inject: s.injection.unwrap_or_default().to_string(),
                    source: "tenant",
                })
                .collect();
            for p in sequester_proxy::services::presets() {
                if !views.iter().any(|v| v.name == p.name.as_str()) {
                    views.push(View {
                        name: p.name.to_string(),
                        base_url: p.base_url.to_string(),
                        inject: p.inject.to_string(),
                        source: "preset",
                    });
                }
            }
            if ctx.json {
                json(&views);
            } else {
                let rows = views
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            v.base_url.clone(),
                            v.inject.clone(),
                            v.source.to_owned(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["NAME", "BASE URL", "INJECT", "SOURCE"], &rows);
            }
        }
        ServiceCommand::Rm { name } => {
            let name = ServiceName::parse(&name)?;
            store.remove_service(&tenant, &name).await?;
            if ctx.json {
                json(&serde_json::json!({ "removed": name }));
            } else {
                println!("Removed service {name}.");
            }
        }
    }
    Ok(())
}

async fn receipts(
    ctx: &Ctx,
    store: &SqliteStore,
    tenant: TenantId,
    args: ReceiptsArgs,
) -> Result<(), Failure> {
    if let Some(ReceiptsCommand::Verify) = args.command {
        return match sequester_audit::verify(store).await {
            Ok(report) => {
                if ctx.json {
                    json(
                        &serde_json::json!({"ok": true, "records": report.records, "head": report.head_seq}),
                    );
                } else {
                    println!("Receipt chain intact: {} records.", report.records);
                }
                Ok(())
            }
            Err(sequester_audit::VerifyError::Store(e)) => Err(e.into()),
            Err(e) => Err(Failure::new(
                ErrorCode::IntegrityFailure,
                format!("{e}; the audit log was tampered with or damaged"),
            )),
        };
    }
    let agent = args.agent.as_deref().map(AgentName::parse).transpose()?;
    let secret = args.secret.as_deref().map(SecretName::parse).transpose()?;
    let since_ms = args
        .since
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| {
            ctx.now
                .unix()
                .saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                * 1000
        });
    let rows = store
        .list_receipts(&sequester_store::ReceiptFilter {
            tenant: Some(tenant),
            agent: agent.map(|a| a.to_string()),
            secret: secret.map(|s| s.to_string()),
            since_ms,
            denied_only: args.denied,
            // Intents and completions come in pairs.
            limit: Some(args.limit.saturating_mul(2)),
        })
        .await?;
    // One line per request: the completion (or denial) replaces its intent.
    let mut merged: Vec<(i64, sequester_audit::Receipt)> = Vec::new();
    for row in rows {
        let body: sequester_audit::Receipt = match serde_json::from_str(&row.receipt.body) {
            Ok(b) => b,
            Err(e) => {
                return Err(Failure::new(
                    ErrorCode::IntegrityFailure,
                    format!(
                        "receipt {} cannot be read ({e}); run `sequester receipts verify`",
                        row.seq
                    ),
                ));
            }
        };
        match merged
            .iter_mut()
            .find(|(_, r)| r.request_id == body.request_id)
        {
            Some(slot) => *slot = (row.seq, body),
            None => merged.push((row.seq, body)),
        }
    }
    let skip = merged
        .len()
        .saturating_sub(usize::try_from(args.limit).unwrap_or(usize::MAX));
    let merged = &merged[skip..];
    if ctx.json {
        #[derive(Serialize)]
        struct View<'a> {
            seq: i64,
            #[serde(flatten)]
            receipt: &'a sequester_audit::Receipt,
        }
        json(
            &merged
                .iter()
                .map(|(seq, receipt)| View { seq: *seq, receipt })
                .collect::<Vec<_>>(),
        );
    } else {
        let rows = merged
            .iter()
            .map(|(_, r)| {
                let at = Timestamp::from_unix(r.at_ms / 1000).rfc3339();
                vec![
                    at,
                    r.agent.clone().unwrap_or_else(|| "-".into()),
                    match (&r.secret, r.secret_version) {
                        (Some(s), Some(v)) => format!("{s}@{v}"),
                        (Some(s), None) => s.clone(),
                        _ => "-".into(),
                    },
                    format!("{} {}", r.method, r.path),
                    match r.kind {
                        sequester_audit::Kind::Intent => "in-flight".to_owned(),
                        _ if r.decision == sequester_audit::Decision::Deny => {
                            format!("denied {}", r.code.as_deref().unwrap_or(""))
                        }
                        _ => r.code.clone().unwrap_or_else(|| "ok".into()),
                    },
                    r.status.map_or_else(|| "-".into(), |s| s.to_string()),
                    r.total_ms
                        .map_or_else(|| "-".into(), |ms| format!("{ms}ms")),
                ]
            })
            .collect::<Vec<_>>();
        table(
            &[
                "TIME", "AGENT", "SECRET", "REQUEST", "OUTCOME", "STATUS", "TOTAL",
            ],
            &rows,
        );
    }
    Ok(())
}

async fn agent_key(
    ctx: &Ctx,
    store: &SqliteStore,
    tenant: TenantId,
    cmd: AgentKeyCommand,
) -> Result<(), Failure> {
    #[derive(Serialize)]
    struct View<'a> {
        #[serde(flatten)]
        meta: &'a sequester_model::AgentKeyMeta,
        state: TokenState,
    }
    match cmd {
        AgentKeyCommand::Issue { name, ttl } => {
            let name = AgentName::parse(&name)?;
            let ttl = ttl.as_deref().map(parse_duration).transpose()?;
            let (key, meta) = store.issue_agent_key(&tenant, &name, ttl, ctx.now).await?;
            if ctx.json {
                #[derive(Serialize)]
                struct Issued<'a> {
                    key: &'a str,
                    #[serde(flatten)]
                    meta: &'a sequester_model::AgentKeyMeta,
                }
                json(&Issued {
                    key: key.reveal(),
                    meta: &meta,
                });
            } else {
                println!("{}", key.reveal());
                eprintln!(
                    "Issued agent key {} for agent {}{}. The key is shown only this once.",
                    meta.id,
                    meta.agent,
                    meta.expires_at
                        .map(|e| format!(", expires {e}"))
                        .unwrap_or_default()
                );
            }
        }
        AgentKeyCommand::List => {
            let keys = store.list_agent_keys(&tenant).await?;
            if ctx.json {
                json(
                    &keys
                        .iter()
                        .map(|meta| View {
                            meta,
                            state: meta.state(ctx.now),
                        })
                        .collect::<Vec<_>>(),
                );
            } else {
                let rows = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.to_string(),
                            k.agent.to_string(),
                            token_state(k.state(ctx.now)).to_owned(),
                            k.created_at.rfc3339(),
                            opt_time(k.expires_at),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["ID", "AGENT", "STATE", "CREATED", "EXPIRES"], &rows);
            }
        }
        AgentKeyCommand::Revoke { id } => {
            let id = sequester_model::AgentKeyId::parse(&id).ok_or_else(|| {
                Failure::new(
                    ErrorCode::InvalidTokenId,
                    format!("{id:?} is not an agent key id; ids look like key_ followed by 24 hex digits (see `sequester agent key list`)"),
                )
            })?;
            let meta = store.revoke_agent_key(&tenant, &id, ctx.now).await?;
            if ctx.json {
                json(&View {
                    meta: &meta,
                    state: meta.state(ctx.now),
                });
            } else {
                println!("Revoked agent key {} (agent {}).", meta.id, meta.agent);
            }
        }
    }
    Ok(())
}

async fn egress(
    ctx: &Ctx,
    store: &SqliteStore,
    tenant: TenantId,
    cmd: EgressCommand,
) -> Result<(), Failure> {
    use sequester_model::EgressAction;
    let parse_agent = |a: Option<String>| a.as_deref().map(AgentName::parse).transpose();
    match cmd {
        EgressCommand::Allow { pattern, agent } => {
            let rule = store
                .add_egress_rule(
                    &tenant,
                    parse_agent(agent)?.as_ref(),
                    EgressAction::Allow,
                    &HostPattern::parse(&pattern)?,
                    ctx.now,
                )
                .await?;
            print_egress_change(ctx, &rule, "Allowed");
        }
        EgressCommand::Deny { pattern, agent } => {
            let rule = store
                .add_egress_rule(
                    &tenant,
                    parse_agent(agent)?.as_ref(),
                    EgressAction::Deny,
                    &HostPattern::parse(&pattern)?,
                    ctx.now,
                )
                .await?;
            print_egress_change(ctx, &rule, "Denied");
        }
        EgressCommand::Rm {
            action,
            pattern,
            agent,
        } => {
            let action = match action.as_str() {
                "allow" => EgressAction::Allow,
                "deny" => EgressAction::Deny,
                other => {
                    return Err(Failure::new(
                        ErrorCode::InvalidValue,
                        format!("{other:?} is not allow or deny"),
                    ));
                }
            };
            let pattern = HostPattern::parse(&pattern)?;
            let removed = store
                .remove_egress_rule(&tenant, parse_agent(agent)?.as_ref(), action, &pattern)
                .await?;
            if ctx.json {
                json(&serde_json::json!({"removed": removed}));
            } else if removed {
                println!("Removed the {} rule for {pattern}.", action.as_str());
            } else {
                println!("There was no {} rule for {pattern}.", action.as_str());
            }
        }
        EgressCommand::List => {
            let rules = store.list_egress_rules(&tenant).await?;
            if ctx.json {
                json(&rules);
            } else {
                let rows = rules
                    .iter()
                    .map(|r| {
                        vec![
                            r.agent
                                .as_ref()
                                .map_or_else(|| "(tenant)".to_owned(), ToString::to_string),
                            r.action.as_str().to_owned(),
                            r.pattern.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["SCOPE", "ACTION", "PATTERN"], &rows);
            }
        }
    }
    Ok(())
}

fn print_egress_change(ctx: &Ctx, rule: &sequester_model::EgressRule, verb: &str) {
    if ctx.json {
        json(rule);
    } else {
        println!(
            "{verb} {} for {}.",
            rule.pattern,
            rule.agent.as_ref().map_or_else(
                || format!("tenant {}", ctx.tenant),
                |a| format!("agent {a}")
            )
        );
    }
}
