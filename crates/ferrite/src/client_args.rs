//! The flags every client subcommand shares, as etcdctl's global flags:
//! `--endpoints`, `--user NAME[:PASSWORD]`, `--password`, `--cacert`,
//! `--cert`, `--key` (also from `FERRITE_USER`, `FERRITE_PASSWORD`,
//! `FERRITE_CACERT`, `FERRITE_CERT`, `FERRITE_KEY`), turned into a client.
//!
//! A password missing from both `--user` and `--password` is asked for on
//! the terminal, without echo; with no terminal that is an error, never a
//! silent empty password.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::bail;
use ferrite_client::{Client, ClientOptions, Credentials, TlsOptions};

/// The default endpoints reach a `ferrite up` cluster.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379";

// The ids are prefixed: subcommands have positional `key` and `user`
// arguments of their own.
#[derive(clap::Args, Clone)]
pub struct Endpoints {
    /// Client addresses of the cluster's members, comma-separated:
    /// `https://host:port` for TLS, `http://host:port` for plaintext; a bare
    /// `host:port` is TLS when --cacert, --cert or --key is given.
    #[arg(long, default_value = DEFAULT_ENDPOINTS, global = true)]
    pub endpoints: String,
    /// User name for authentication, `NAME` or `NAME:PASSWORD` (a missing
    /// password is asked for on the terminal).
    #[arg(long = "user", id = "global_user", env = "FERRITE_USER", global = true)]
    pub user: Option<String>,
    /// Password of --user (then --user is the name alone, colons and all).
    #[arg(
        long = "password",
        id = "global_password",
        env = "FERRITE_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Verify the members' certificates with this CA bundle (PEM).
    #[arg(
        long = "cacert",
        id = "global_cacert",
        env = "FERRITE_CACERT",
        global = true
    )]
    pub cacert: Option<PathBuf>,
    /// Identify this client with this certificate (PEM).
    #[arg(long = "cert", id = "global_cert", env = "FERRITE_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long = "key", id = "global_key", env = "FERRITE_KEY", global = true)]
    pub key: Option<PathBuf>,
}

/// `--user` and `--password` as given, before any prompt.
#[derive(Debug, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    /// `None`: to be asked for.
    pub password: Option<String>,
}

/// Splits `--user` as etcdctl does: with `--password`, the whole of
/// `--user` is the name; otherwise `NAME:PASSWORD` splits at the first
/// colon.
pub fn parse_user(user: Option<&str>, password: Option<&str>) -> anyhow::Result<Option<UserSpec>> {
    let Some(user) = user else {
        if password.is_some() {
            bail!("--password needs --user");
        }
        return Ok(None);
    };
    let spec = match (password, user.split_once(':')) {
        (Some(p), _) => UserSpec {
            name: user.to_string(),
            password: Some(p.to_string()),
        },
        (None, Some((name, p))) => UserSpec {
            name: name.to_string(),
            password: Some(p.to_string()),
        },
        (None, None) => UserSpec {
            name: user.to_string(),
            password: None,
        },
    };
    if spec.name.is_empty() {
        bail!("--user: empty user name is not allowed");
    }
    Ok(Some(spec))
}

/// Asks for a secret on the terminal without echoing it; an error when
/// standard input is not a terminal. `hint` says how else to give it.
pub fn ask_secret(prompt: &str, hint: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password on: {hint}");
    }
    Ok(rpassword::prompt_password(prompt)?)
}

impl Endpoints {
    pub fn list(&self) -> Vec<String> {
        self.endpoints
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// TLS and credentials from the flags (asking for a missing password).
    pub fn options(&self) -> anyhow::Result<ClientOptions> {
        let tls = (self.cacert.is_some() || self.cert.is_some() || self.key.is_some()).then(|| {
            TlsOptions {
                ca: self.cacert.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
            }
        });
        let credentials = match parse_user(self.user.as_deref(), self.password.as_deref())? {
            None => None,
            Some(UserSpec {
                name,
                password: Some(password),
            }) => Some(Credentials {
                user: name,
                password,
            }),
            Some(UserSpec {
                name,
                password: None,
            }) => {
                let password = ask_secret(
                    "Password: ",
                    &format!("give --user {name}:PASSWORD, --password or FERRITE_PASSWORD"),
                )?;
                Some(Credentials {
                    user: name,
                    password,
                })
            }
        };
        Ok(ClientOptions { tls, credentials })
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_options(self.list(), self.options()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, password: Option<&str>) -> Option<UserSpec> {
        Some(UserSpec {
            name: name.to_string(),
            password: password.map(String::from),
        })
    }

    #[test]
    fn user_splits_at_the_first_colon() {
        let got = parse_user(Some("alice:s3cret"), None).ok();
        assert_eq!(got, Some(spec("alice", Some("s3cret"))));
        let got = parse_user(Some("alice:a:b"), None).ok();
        assert_eq!(got, Some(spec("alice", Some("a:b"))));
        let got = parse_user(Some("alice:"), None).ok();
        assert_eq!(got, Some(spec("alice", Some(""))));
    }

    #[test]
    fn with_password_the_whole_user_is_the_name() {
        let got = parse_user(Some("dom:alice"), Some("pw")).ok();
        assert_eq!(got, Some(spec("dom:alice", Some("pw"))));
    }

    #[test]
    fn a_missing_password_is_to_be_asked() {
        assert_eq!(parse_user(Some("bob"), None).ok(), Some(spec("bob", None)));
        assert_eq!(parse_user(None, None).ok(), Some(None));
    }

    #[test]
    fn bad_user_flags_are_errors() {
        assert!(parse_user(Some(":pw"), None).is_err());
        assert!(parse_user(None, Some("pw")).is_err());
    }

    /// The flags parse from the command line and the environment alike.
    #[test]
    fn flags_parse_as_etcdctls() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            e: Endpoints,
        }
        let cli = Cli::try_parse_from([
            "ferrite",
            "--endpoints",
            "https://127.0.0.1:2379",
            "--user",
            "root:pw",
            "--cacert",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
        ])
        .expect("parse");
        assert_eq!(cli.e.list(), vec!["https://127.0.0.1:2379".to_string()]);
        assert_eq!(cli.e.user.as_deref(), Some("root:pw"));
        assert_eq!(cli.e.cacert, Some(PathBuf::from("ca.pem")));
        let options = cli.e.options().expect("options");
        let tls = options.tls.expect("TLS options");
        assert_eq!(tls.key, Some(PathBuf::from("k.pem")));
        let c = options.credentials.expect("credentials");
        assert_eq!((c.user.as_str(), c.password.as_str()), ("root", "pw"));
    }
}
