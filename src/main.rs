//! The `tidecast` binary: CLI, config loading, logging, and the actor system.
//!
//! ```text
//! tidecast [serve] [--config FILE]                      run the server (default)
//! tidecast migrate [--config FILE]                      apply database migrations and exit
//! tidecast user create EMAIL [--admin]                  create an account (password: TIDECAST_PASSWORD or a prompt)
//! tidecast channel create NAME [--owner EMAIL]          create a channel, print its stream key
//! tidecast channel rotate-key NAME                      new stream key; the old one stops working
//! ```
//! Commands that create a secret print it alone on the last line of standard output; everything
//! else goes to standard error.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tidecast::config::{Config, LogFormat};
use tidecast::store::{NewChannel, NewUser, Visibility};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "tidecast", version, about = "Live and VOD media server")]
struct Cli {
    /// TOML config file (every key: conf/default.toml). Environment variables
    /// TIDECAST__SECTION__KEY override it.
    #[arg(long, global = true, env = "TIDECAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage channels.
    #[command(subcommand)]
    Channel(ChannelCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The password comes from TIDECAST_PASSWORD, or a prompt, or stdin.
    Create {
        email: String,
        /// Public name (default: the part of the email before '@').
        #[arg(long)]
        username: Option<String>,
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// Create a channel and print its stream key (last line of stdout).
    Create {
        name: String,
        /// Owner's email (an existing account).
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        title: Option<String>,
        /// public, subscribers or private.
        #[arg(long, default_value = "public")]
        visibility: Visibility,
    },
    /// Replace a channel's stream key and print the new one (last line of stdout).
    RotateKey { name: String },
}

fn init_logging(config: &Config) {
    use tidecast::logging::{ClientNoise, HideClientNoise};
    use tracing_subscriber::prelude::*;
    let mut filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // webrtc-rs logs every session's state changes (we log our own, once per session) and warns
    // about each TLS 1.3 extension in a browser's DTLS ClientHello (harmless, ignored): quiet
    // unless the configured level names these targets itself.
    if !config.log.level.contains("rtc") {
        for d in ["rtc=warn", "rtc_ice=warn", "rtc_dtls=error", "rtc_sctp=warn"] {
            filter = filter.add_directive(d.parse().expect("a valid directive"));
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `ClientNoise` comes after the formatting layer: it logs actix's client errors again at
    // WARN once the original event has been (not) formatted.
    // The most verbose level any directive lets through: records of the `log` crate (rtc's
    // per-packet `debug!`, srt-tokio's) above it are then not even built. The subscriber gives
    // no such hint itself (its per-layer filter has none), so `log` would pass every record on.
    let most_verbose = filter.max_level_hint();
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Text => registry.with(fmt.with_filter(HideClientNoise)).with(ClientNoise).init(),
        LogFormat::Json => registry.with(fmt.json().with_filter(HideClientNoise)).with(ClientNoise).init(),
    }
    if let Some(level) = most_verbose {
        tracing_log::log::set_max_level(tracing_log::AsLog::as_log(&level));
    }
}

/// Print a secret alone on the last line of stdout, for scripts to capture.
fn print_secret(secret: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{secret}")?;
    out.flush()?;
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("TIDECAST_PASSWORD") {
        return Ok(p);
    }
    let p = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if p.len() < 8 {
        bail!("the password must be at least 8 characters");
    }
    Ok(p)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    init_logging(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Migrate => admin(async move {
            tidecast::app::open_store(&config).await?;
            tracing::info!("migrations applied");
            Ok(())
        }),
        Command::User(UserCommand::Create { email, username, admin: is_admin }) => admin(async move {
            let password = read_password()?;
            let store = tidecast::app::open_store(&config).await?;
            let username =
                username.unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
            let password_hash = Some(tidecast::auth::hash_password(password).await?);
            let user = store.create_user(NewUser { email, username, password_hash, is_admin }).await?;
            tracing::info!(id = user.id, email = %user.email, admin = user.is_admin, "user created");
            Ok(())
        }),
        Command::Channel(ChannelCommand::Create { name, owner, title, visibility }) => admin(async move {
            let store = tidecast::app::open_store(&config).await?;
            let owner_id = match owner {
                Some(email) => Some(
                    store
                        .user_by_email(&email)
                        .await?
                        .with_context(|| format!("no user with email {email}"))?
                        .id,
                ),
                None => None,
            };
            let (channel, key) =
                store.create_channel(NewChannel { name, title, owner_id, visibility }).await?;
            eprintln!(
                "channel '{}' created; publish to rtmp://HOST:1935/live with this stream key:",
                channel.name
            );
            print_secret(key.expose())
        }),
        Command::Channel(ChannelCommand::RotateKey { name }) => admin(async move {
            let store = tidecast::app::open_store(&config).await?;
            let key = store.rotate_stream_key(&name).await?;
            eprintln!("new stream key for '{name}'; the old key no longer works:");
            print_secret(key.expose())
        }),
    }
}

/// Run a one-shot admin command on a small runtime.
fn admin(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(fut)
}

fn serve(config: Config) -> anyhow::Result<()> {
    // Connection tasks (RTMP today) run on a multi-threaded runtime so they spread over every
    // core; actors and actix-web run on the actix system's arbiters.
    let media = tokio::runtime::Builder::new_multi_thread()
        .thread_name("tidecast-media")
        .enable_all()
        .build()
        .context("starting the media runtime")?;
    let handle = media.handle().clone();
    let result = actix_web::rt::System::new().block_on(tidecast::app::serve(config, handle));
    media.shutdown_timeout(std::time::Duration::from_secs(2));
    result.map_err(|e| anyhow::anyhow!("{e}"))
}
