//! `ferrite shell`: an interactive client. Type commands, see answers and
//! what the client did to get them (redirects, retries, dead nodes).

use std::io::{BufRead, Write};

use ferrite_client::{Client, Notice};

const HELP: &str = "commands:
  PUT key value        GET key        DEL key        LIST [prefix]
  ADD name delta       SET name value READ name      CAS name expected new
  STATUS               MEMBERS        CONNECT host:port
  WATCH key [PREFIX]   UNWATCH
  HELP                 QUIT

WATCH runs in the background: events print as `[watch] PUT k = v (revision n)`
lines between your commands, until UNWATCH, another WATCH (which replaces
it) or QUIT. With the word PREFIX it watches every key starting with key.";

pub async fn run(mut client: Client) -> anyhow::Result<()> {
    client.on_notice(|n| match n {
        Notice::Redirected { name, url } => println!("  (redirected to leader {name} ({url}))"),
        Notice::NoLeader => println!("  (no leader yet, retrying)"),
        Notice::Unreachable { url, next } => println!("  ({url} unreachable, trying {next})"),
        Notice::Retrying(why) => println!("  (retrying: {why})"),
        Notice::WatchResumed { url, revision } => {
            println!("  (watch resumed on {url} from revision {revision})")
        }
    });
    println!("ferrite shell on {} (HELP for commands)", client.endpoint());
    // Lines are read on a thread of their own, so that a background watch
    // prints while the shell waits for input.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut watching: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        print!("ferrite> ");
        std::io::stdout().flush()?;
        let Some(line) = lines.recv().await else {
            break;
        };
        let line = line?;
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
        let result = execute(&mut client, &command, &words[1..]).await;
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
