//! `ferrite shell`: an interactive client. Type commands, see answers and
//! what the client did to get them (redirects, retries, dead nodes, a
//! refreshed auth token).
//!
//! The shell runs with the credentials and TLS settings of its flags, and
//! has etcdctl's auth administration as `AUTH`, `USER` and `ROLE`
//! commands; a new password is asked for without echo on a terminal (from
//! the next input line otherwise), never typed on the command line.

use std::io::{BufRead, IsTerminal, Write};

use ferrite_client::{Client, Notice};

const HELP: &str = "commands:
  PUT key value        GET key        DEL key        LIST [prefix]
  ADD name delta       SET name value READ name      CAS name expected new
  STATUS               MEMBERS        CONNECT host:port
  WATCH key [PREFIX]   UNWATCH
  AUTH ENABLE|DISABLE|STATUS
  USER LIST|GET name|ADD name|DELETE name|PASSWD name
  USER GRANT-ROLE user role|REVOKE-ROLE user role
  ROLE LIST|GET name|ADD name|DELETE name
  ROLE GRANT-PERMISSION role read|write|readwrite key [end|PREFIX|FROM-KEY]
  ROLE REVOKE-PERMISSION role key [end|PREFIX|FROM-KEY]
  HELP                 QUIT

WATCH runs in the background: events print as `[watch] PUT k = v (revision n)`
lines between your commands, until UNWATCH, another WATCH (which replaces
it) or QUIT. With the word PREFIX it watches every key starting with key.
USER ADD and USER PASSWD ask for the password (twice, without echo, on a
terminal).";

/// What the input thread is asked to read next.
enum Ask {
    Line,
    /// A password: without echo on a terminal, else the next line.
    Secret(String),
}

/// Standard input, read on a thread of its own so that a background watch
/// prints while the shell waits; it reads only when asked, so that a
/// password prompt can take the terminal in between.
struct Input {
    ask: std::sync::mpsc::Sender<Ask>,
    answers: tokio::sync::mpsc::UnboundedReceiver<std::io::Result<Option<String>>>,
    terminal: bool,
}

impl Input {
    fn start() -> Input {
        let (ask, questions) = std::sync::mpsc::channel::<Ask>();
        let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
        let terminal = std::io::stdin().is_terminal();
        std::thread::spawn(move || {
            for question in questions {
                let answer = match question {
                    Ask::Secret(prompt) if terminal => rpassword::prompt_password(prompt).map(Some),
                    Ask::Secret(prompt) => {
                        print!("{prompt}");
                        let _ = std::io::stdout().flush();
                        read_line()
                    }
                    Ask::Line => read_line(),
                };
                if tx.send(answer).is_err() {
                    break;
                }
            }
        });
        Input {
            ask,
            answers,
            terminal,
        }
    }

    /// The next line; `None` at the end of the input.
    async fn line(&mut self) -> anyhow::Result<Option<String>> {
        self.read(Ask::Line).await
    }

    async fn read(&mut self, ask: Ask) -> anyhow::Result<Option<String>> {
        if self.ask.send(ask).is_err() {
            return Ok(None);
        }
        Ok(self.answers.recv().await.transpose()?.flatten())
    }

    /// A new password for `name`: twice on a terminal, which must agree.
    async fn new_password(&mut self, name: &str) -> anyhow::Result<String> {
        let missing = || anyhow::anyhow!("no password given");
        let first = self
            .read(Ask::Secret(format!("Password of {name}: ")))
            .await?
            .ok_or_else(missing)?;
        if first.is_empty() {
            anyhow::bail!("empty password");
        }
        if self.terminal {
            let again = self
                .read(Ask::Secret(format!(
                    "Type password of {name} again for confirmation: "
                )))
                .await?
                .ok_or_else(missing)?;
            if again != first {
                anyhow::bail!("given passwords are different");
            }
        }
        Ok(first)
    }
}

fn read_line() -> std::io::Result<Option<String>> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line)? {
        0 => Ok(None),
        _ => Ok(Some(line.trim_end_matches(['\n', '\r']).to_string())),
    }
}

pub async fn run(mut client: Client) -> anyhow::Result<()> {
    client.on_notice(|n| match n {
        Notice::Redirected { name, url } => println!("  (redirected to leader {name} ({url}))"),
        Notice::NoLeader => println!("  (no leader yet, retrying)"),
        Notice::Unreachable { url, next } => println!("  ({url} unreachable, trying {next})"),
        Notice::Retrying(why) => println!("  (retrying: {why})"),
        Notice::WatchResumed { url, revision } => {
            println!("  (watch resumed on {url} from revision {revision})")
        }
        Notice::Reauthenticated { why } => println!("  (authenticated again: {why})"),
    });
    println!("ferrite shell on {} (HELP for commands)", client.endpoint());
    let mut input = Input::start();
    let mut watching: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        print!("ferrite> ");
        std::io::stdout().flush()?;
        let Some(line) = input.line().await? else {
            break;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(command) = words.first() else {
            continue;
        };
        let command = command.to_ascii_uppercase();
        if command == "WATCH" || command == "UNWATCH" {
            if let Some(old) = watching.take() {
                old.abort();
            }
            if command == "WATCH" {
                match start_watch(&client, &words[1..]).await {
                    Ok((task, text)) => {
                        watching = Some(task);
                        println!("{text}");
                    }
                    Err(e) => println!("error: {e}"),
                }
            } else {
                println!("not watching");
            }
            continue;
        }
        let result = match command.as_str() {
            "AUTH" | "USER" | "ROLE" => access(&mut client, &mut input, &command, &words[1..])
                .await
                .map(Some),
            _ => execute(&mut client, &command, &words[1..]).await,
        };
        match result {
            Ok(Some(text)) => println!("{text}"),
            Ok(None) => break,
            Err(e) => println!("error: {e}"),
        }
    }
    Ok(())
}

/// Starts a background watch of `args[0]` (a prefix with `PREFIX`).
async fn start_watch(
    client: &Client,
    args: &[&str],
) -> anyhow::Result<(tokio::task::JoinHandle<()>, String)> {
    let key = args
        .first()
        .ok_or_else(|| anyhow::anyhow!("missing key; HELP lists the commands"))?;
    let prefix = args
        .get(1)
        .is_some_and(|w| w.eq_ignore_ascii_case("prefix"));
    let options = ferrite_client::WatchOptions {
        prefix,
        ..Default::default()
    };
    let mut w = client.watch(key.as_bytes(), options).await?;
    let text = format!(
        "watching {key}{} from revision {} (UNWATCH stops)",
        if prefix { "*" } else { "" },
        w.next_revision()
    );
    let task = tokio::spawn(async move {
        loop {
            match w.next().await {
                Ok(e) => println!("\n[watch] {}", crate::coordination::event_line(&e)),
                Err(e) => {
                    println!("\n[watch] ended: {e}");
                    return;
                }
            }
        }
    });
    Ok((task, text))
}

fn int(word: Option<&&str>, what: &str) -> anyhow::Result<i64> {
    let w = word.ok_or_else(|| anyhow::anyhow!("missing {what}"))?;
    w.parse()
        .map_err(|_| anyhow::anyhow!("{what} {w:?} is not an integer"))
}

async fn execute(
    client: &mut Client,
    command: &str,
    args: &[&str],
) -> anyhow::Result<Option<String>> {
    let arg = |i: usize, what: &str| {
        args.get(i)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("missing {what}; HELP lists the commands"))
    };
    Ok(Some(match command {
        "PUT" => {
            let rev = client
                .put(arg(0, "key")?.as_bytes(), args[1..].join(" ").as_bytes())
                .await?;
            format!("OK (revision {rev})")
        }
        "GET" => match client.get(arg(0, "key")?.as_bytes()).await? {
            Some(kv) => String::from_utf8_lossy(&kv.value).into_owned(),
            None => "not found".to_string(),
        },
        "DEL" => {
            let n = client.delete(arg(0, "key")?.as_bytes()).await?;
            if n == 0 {
                "not found".to_string()
            } else {
                format!("deleted {n}")
            }
        }
        "LIST" => {
            let kvs = client
                .get_prefix(args.first().copied().unwrap_or("").as_bytes())
                .await?;
            let mut out = format!("{} keys", kvs.len());
            for kv in kvs {
                out.push_str(&format!(
                    "\n{} = {}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                ));
            }
            out
        }
        "ADD" => client
            .register_add(arg(0, "name")?, int(args.get(1), "delta")?)
            .await?
            .to_string(),
        "SET" => {
            let prev = client
                .register_set(arg(0, "name")?, int(args.get(1), "value")?)
                .await?;
            format!("OK (was {prev})")
        }
        "READ" => client.register_get(arg(0, "name")?).await?.to_string(),
        "CAS" => {
            let (ok, now) = client
                .register_cas(
                    arg(0, "name")?,
                    int(args.get(1), "expected")?,
                    int(args.get(2), "new")?,
                )
                .await?;
            if ok {
                format!("swapped; now {now}")
            } else {
                format!("not swapped; value is {now}")
            }
        }
        "STATUS" => {
            let mut out = String::new();
            for m in client.cluster_status().await? {
                let role = m
                    .status
                    .as_ref()
                    .map_or("unreachable", |s| crate::status::role_name(s.role));
                out.push_str(&format!("{} {:x} {role}\n", m.name, m.id));
            }
            out.trim_end().to_string()
        }
        "MEMBERS" => {
            let mut out = String::new();
            for m in client.members().await? {
                out.push_str(&format!(
                    "{:x} {} {} {}{}\n",
                    m.id,
                    m.name,
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    if m.is_learner { " (learner)" } else { "" }
                ));
            }
            out.trim_end().to_string()
        }
        "CONNECT" => {
            client.use_endpoint(arg(0, "address")?);
            format!("now talking to {}", client.endpoint())
        }
        "HELP" => HELP.to_string(),
        "QUIT" | "EXIT" => return Ok(None),
        other => format!("unknown command {other:?}; HELP lists the commands"),
    }))
}

/// `AUTH ...`, `USER ...` and `ROLE ...`: etcdctl's auth commands, with
/// its output.
async fn access(
    client: &mut Client,
    input: &mut Input,
    command: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    use crate::auth;
    let arg = |i: usize, what: &str| {
        args.get(i)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("missing {what}; HELP lists the commands"))
    };
    let sub = arg(0, "subcommand")?.to_ascii_uppercase();
    // `KEY [END|PREFIX|FROM-KEY]` from word `i` on.
    let range = |i: usize| -> anyhow::Result<(String, ferrite_client::KeyRange<'_>)> {
        let key = arg(i, "key")?.to_string();
        let range = match args.get(i + 1).copied() {
            None => ferrite_client::KeyRange::Key,
            Some(w) if w.eq_ignore_ascii_case("prefix") => ferrite_client::KeyRange::Prefix,
            Some(w) if w.eq_ignore_ascii_case("from-key") => ferrite_client::KeyRange::FromKey,
            Some(end) => ferrite_client::KeyRange::Until(end.as_bytes()),
        };
        Ok((key, range))
    };
    match (command, sub.as_str()) {
        ("AUTH", "ENABLE") => auth::enable(client).await,
        ("AUTH", "DISABLE") => auth::auth(client, auth::AuthOp::Disable).await,
        ("AUTH", "STATUS") => auth::status(client).await,
        ("USER", "LIST") => Ok(client.user_list().await?.join("\n")),
        ("USER", "GET") => {
            let name = arg(1, "user name")?;
            let roles = client.user_get(name).await?;
            Ok(auth::user_text(name, &roles))
        }
        ("USER", "ADD") => {
            let name = arg(1, "user name")?;
            let password = input.new_password(name).await?;
            auth::user_add(client, name, Some(&password)).await
        }
        ("USER", "PASSWD") => {
            let name = arg(1, "user name")?;
            let password = input.new_password(name).await?;
            auth::user_passwd(client, name, &password).await
        }
        ("USER", "DELETE") => {
            let name = arg(1, "user name")?;
            client.user_delete(name).await?;
            Ok(format!("User {name} deleted"))
        }
        ("USER", "GRANT-ROLE") => auth::grant_role(client, arg(1, "user")?, arg(2, "role")?).await,
        ("USER", "REVOKE-ROLE") => {
            auth::revoke_role(client, arg(1, "user")?, arg(2, "role")?).await
        }
        ("ROLE", "LIST") => Ok(client.role_list().await?.join("\n")),
        ("ROLE", "GET") => {
            let name = arg(1, "role name")?;
            let perms = client.role_get(name).await?;
            Ok(auth::role_text(name, &perms))
        }
        ("ROLE", "ADD") => {
            let name = arg(1, "role name")?;
            client.role_add(name).await?;
            Ok(format!("Role {name} created"))
        }
        ("ROLE", "DELETE") => {
            let name = arg(1, "role name")?;
            client.role_delete(name).await?;
            Ok(format!("Role {name} deleted"))
        }
        ("ROLE", "GRANT-PERMISSION") => {
            let (key, range) = range(3)?;
            auth::grant_permission(
                client,
                arg(1, "role")?,
                arg(2, "permission type")?,
                &key,
                range,
            )
            .await
        }
        ("ROLE", "REVOKE-PERMISSION") => {
            let (key, range) = range(2)?;
            auth::revoke_permission(client, arg(1, "role")?, &key, range).await
        }
        (_, other) => Ok(format!(
            "unknown command {command} {other}; HELP lists the commands"
        )),
    }
}
