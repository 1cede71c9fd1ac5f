//! Command-line grammar. Values that need validation are taken as strings here and parsed in
//! the commands, so that every bad input is reported with its stable error code.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Secret values are never taken from arguments or environment variables: pipe them on standard
input or type them at the hidden prompt. No command prints a value back.

Exit status: 0 success, 1 internal or storage error, 2 invalid input, 3 not found,
4 already exists, 5 key or integrity problem, 6 refused by state (revoked, expired, disabled).

Examples:
  sequester init
  printf %s \"$OPENAI_KEY\" | sequester secret add openai --host api.openai.com
  sequester agent add coder
  sequester token issue --agent coder --secret openai --ttl 12h
  sequester serve";

/// Sequester: a credential broker for AI agents.
///
/// Agents hold opaque tokens that mean nothing outside the broker; the real credentials stay
/// sealed here and are attached on the way out, only toward the hosts each secret allows.
#[derive(Debug, Parser)]
#[command(name = "sequester", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// Data directory [default: $XDG_DATA_HOME/sequester, usually ~/.local/share/sequester]
    #[arg(long, global = true, env = "SEQUESTER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// File holding the passphrase, for data directories initialised with --passphrase
    #[arg(
        long,
        global = true,
        env = "SEQUESTER_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    pub passphrase_file: Option<PathBuf>,

    /// Tenant to act in
    #[arg(
        long,
        global = true,
        env = "SEQUESTER_TENANT",
        default_value = "default"
    )]
    pub tenant: String,

    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory, the master key and the database
    Init(InitArgs),
    /// Initialise if needed, then serve
    Up(ServeArgs),
    /// Run the broker
    Serve(ServeArgs),
    /// Replace the master key and re-wrap every tenant key, atomically
    Rekey,
    /// Manage tenants (isolation zones: nothing crosses tenants)
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Run a command as an agent: its traffic goes through the broker's proxy, it holds only
    /// tokens, and it cannot read the data directory
    Run(RunArgs),
    /// Print the shell settings `run` would give an agent (eval "$(sequester env --agent A)")
    Env(EnvArgs),
    /// (internal) confine this process away from the data directory, then exec the command
    #[command(name = "__exec-confined", hide = true)]
    ExecConfined(ExecConfinedArgs),
    /// Find credentials in files and directories (respects .gitignore); exit 1 if any
    Scan(ScanArgs),
    /// Copy standard input to standard output with every credential replaced
    Redact(RedactArgs),
    #[command(flatten)]
    InTenant(TenantScoped),
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files and directories to scan
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Write SARIF 2.1.0 instead of a table (for code-scanning tools)
    #[arg(long, conflicts_with = "json")]
    pub sarif: bool,
    /// Include each secret's text in the output (off by default: point at secrets, don't copy them)
    #[arg(long)]
    pub show_secrets: bool,
    /// Scan files that .gitignore and .ignore exclude
    #[arg(long)]
    pub no_ignore: bool,
    /// Skip files larger than this many bytes
    #[arg(long, value_name = "BYTES")]
    pub max_file_size: Option<u64>,
    /// Additional rules (TOML, same format as the built-in rule files)
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RedactArgs {
    /// Also seal each credential found into the vault (as the sanitize API does) and write the
    /// agent's placeholder for it, which then works in the broker; public halves of
    /// credentials (an AWS access key id) then stay readable, as in the sanitize API
    #[arg(long, requires = "agent")]
    pub seal: bool,
    /// The agent the sealed secrets are granted to (with --seal)
    #[arg(long)]
    pub agent: Option<String>,
    /// Additional rules (TOML, same format as the built-in rule files)
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

/// Commands that act inside one tenant (`--tenant`).
#[derive(Debug, Subcommand)]
pub enum TenantScoped {
    /// Manage services: named upstreams the gateway routes /{service}/… to
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Show receipts (who used which secret where, and what happened), or verify their chain
    Receipts(ReceiptsArgs),
    /// Where agents may connect through the forward proxy
    #[command(subcommand)]
    Egress(EgressCommand),
    /// Manage agents (workload identities inside a tenant)
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage secrets (write-only: values go in, never come out)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Issue and revoke the opaque tokens agents hold instead of credentials
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Derive the master key from a passphrase (Argon2id) instead of writing a key file.
    /// The passphrase is then needed every time the broker starts.
    #[arg(long)]
    pub passphrase: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the gateway listens on [default: the config's `listen`, else 127.0.0.1:8787]
    #[arg(long, env = "SEQUESTER_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address the forward proxy (HTTPS_PROXY) listens on [default: the config's
    /// `proxy_listen`, else 127.0.0.1:8788]
    #[arg(long, env = "SEQUESTER_PROXY_LISTEN", value_name = "ADDR")]
    pub proxy_listen: Option<String>,
    /// Configuration file (TOML) [default: sequester.toml in the data directory, if present]
    #[arg(long, env = "SEQUESTER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for upstream TLS besides the system roots
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Add a tenant with its own data key
    Add {
        /// Tenant name: 1-64 characters from A-Z a-z 0-9 _ - . starting with a letter or digit
        name: String,
    },
    /// List tenants
    List,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Add an agent identity
    Add {
        /// Agent name: 1-64 characters from A-Z a-z 0-9 _ - . starting with a letter or digit
        name: String,
    },
    /// List agents
    List,
    /// Disable an agent: its tokens stop working at once
    Disable { name: String },
    /// Manage agent keys (sqa_…): an agent's own credential for the agent API
    #[command(subcommand)]
    Key(AgentKeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum AgentKeyCommand {
    /// Issue a key for an agent; it is printed once and stored only as a hash
    Issue {
        name: String,
        /// The key expires after this long, e.g. 12h [default: never]
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// List agent keys (ids and metadata)
    List,
    /// Revoke an agent key by its id (key_…)
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Add a secret; its value is read from standard input or a hidden prompt
    Add(SecretAddArgs),
    /// List secrets (metadata only)
    List,
    /// Show one secret's metadata: hosts, injection rule, version, dates, state
    Show { name: String },
    /// Give a secret a new value (read like `add`); the old one stays valid for --grace
    Rotate {
        name: String,
        /// How long the previous value keeps working, e.g. 1h or 30m [default: none]
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
    },
    /// Revoke a secret: no version of it is used again
    Revoke { name: String },
    /// Delete a secret with all its versions, grants and tokens
    Rm { name: String },
    /// List a secret's versions and their states
    History { name: String },
}

#[derive(Debug, Args)]
pub struct SecretAddArgs {
    /// Secret name: 1-64 characters from A-Z a-z 0-9 _ - . starting with a letter or digit
    pub name: String,
    /// Host the value may be sent to: api.example.com, *.example.com (one label), an IP
    /// address, each with an optional :port. Repeat for several hosts.
    #[arg(long = "host", required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// How the value is attached: 'header:NAME:TEMPLATE' (TEMPLATE holds {value}),
    /// 'basic:USER' or 'query:PARAM' [default: the service's rule, else
    /// 'header:Authorization:Bearer {value}']
    #[arg(long, value_name = "RULE")]
    pub inject: Option<String>,
    /// The secret expires after this long, e.g. 90d or 12h
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// Environment variable that `sequester run` sets to the agent's token for this secret,
    /// e.g. OPENAI_API_KEY
    #[arg(long = "env", value_name = "VAR")]
    pub env_var: Option<String>,
    /// Also replace the secret's tokens and placeholders in request bodies sent through the
    /// forward proxy to its hosts (the body is buffered and Content-Length fixed up)
    #[arg(long = "body")]
    pub body_substitution: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token for an agent to use a secret; it is printed once and stored only as a hash
    Issue {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        secret: String,
        /// The token expires after this long, e.g. 1h [default: never]
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// List tokens (ids and metadata; tokens themselves are never stored)
    List,
    /// Revoke a token by its id (tok_…)
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Add a service to the tenant; /{NAME}/rest goes to BASE_URL/rest
    Add {
        /// Service name: the first path segment of gateway requests
        name: String,
        /// Where requests go, like https://api.example.com/v1
        #[arg(long, value_name = "URL")]
        base_url: String,
        /// Injection rule for secrets that do not set one [default: header:Authorization:Bearer {value}]
        #[arg(long, value_name = "RULE")]
        inject: Option<String>,
    },
    /// List the tenant's services and the built-in presets
    List,
    /// Remove one of the tenant's services
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct ReceiptsArgs {
    #[command(subcommand)]
    pub command: Option<ReceiptsCommand>,
    /// Only this agent's receipts
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this secret's receipts
    #[arg(long)]
    pub secret: Option<String>,
    /// Only receipts from this long ago until now, e.g. 1h or 7d
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only denials
    #[arg(long)]
    pub denied: bool,
    /// At most this many (the newest)
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Check the hash chain of every receipt: reports an edited, removed or reordered record
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum EgressCommand {
    /// Allow a destination (host pattern, IP address; optional :port). Private, loopback and
    /// metadata addresses are refused unless a rule names them.
    Allow {
        pattern: String,
        /// Only for this agent (agent rules take precedence over tenant rules)
        #[arg(long)]
        agent: Option<String>,
    },
    /// Deny a destination
    Deny {
        pattern: String,
        #[arg(long)]
        agent: Option<String>,
    },
    /// Remove a rule
    Rm {
        /// allow or deny
        action: String,
        pattern: String,
        #[arg(long)]
        agent: Option<String>,
    },
    /// List the tenant's and its agents' rules
    List,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent the command runs as
    #[arg(long, env = "SEQUESTER_AGENT")]
    pub agent: String,
    /// Broker settings, used when no broker is serving this data directory and `run` starts
    /// one of its own
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The agent whose settings to print
    #[arg(long, env = "SEQUESTER_AGENT")]
    pub agent: String,
    /// How long the agent key and tokens printed stay valid
    #[arg(long, default_value = "12h", value_name = "DURATION")]
    pub ttl: String,
}

#[derive(Debug, Args)]
pub struct ExecConfinedArgs {
    #[arg(long = "deny", value_name = "PATH")]
    pub deny: Vec<PathBuf>,
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}
