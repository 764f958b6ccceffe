//! `shadowcat session list|cleanup|delete`: a running proxy's sessions,
//! through its admin API.

use anyhow::{Context, Result};
use reqwest::{Method, StatusCode, Url};
use shadowcat::cli::{SessionAction, SessionArgs, DEFAULT_ADMIN_LISTEN};
use shadowcat::proxy::admin::{Removed, SessionRow, PARTIAL_LISTING};
use shadowcat::text_table::{Align, TextTable};

/// How the admin API's 404 for a session it does not hold begins, which
/// tells it from the 404 of a server that has no admin API.
const ADMIN_NO_SESSION: &str = "no session `";

pub async fn run(args: &SessionArgs) -> Result<()> {
    let token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str| {
        let url = args.admin.join(path).unwrap_or_else(|_| args.admin.clone());
        let request = client.request(method, url);
        match &token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let reach = |request: reqwest::RequestBuilder| async {
        request.send().await.with_context(|| {
            format!(
                "cannot reach the admin API at {} (is `shadowcat reverse` running, and is \
                 this its --admin-listen?)",
                args.admin
            )
        })
    };
    let send = |method: Method, path: &'static str| {
        let request = call(method.clone(), path);
        async move {
            let response = reach(request).await?;
            if response.status().is_success() {
                return Ok(response);
            }
            Err(refusal(&method, response, &args.admin).await)
        }
    };
    match &args.action {
        SessionAction::List { json } => {
            let response = send(Method::GET, "sessions").await?;
            if response.headers().contains_key(PARTIAL_LISTING) {
                eprintln!(
                    "warning: the cluster's Redis is unreachable; only the sessions of the \
                     instance at {} are listed",
                    args.admin
                );
            }
            let rows: Vec<SessionRow> = response
                .json()
                .await
                .context("the admin API answered something that is not a session list")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
        }
        SessionAction::Cleanup { all } => {
            let path = if *all {
                "sessions/cleanup?all=true"
            } else {
                "sessions/cleanup"
            };
            let done: Removed = send(Method::POST, path).await?.json().await?;
            let instances = done
                .instances
                .map(|n| format!(" on {n} instance(s)"))
                .unwrap_or_default();
            println!(
                "removed {} session(s){instances}{}",
                done.removed,
                deferred(done.deferred)
            );
            if !done.unreached.is_empty() {
                anyhow::bail!(
                    "instance(s) {} could not be reached and keep their sessions; run this \
                     again, or against their own --admin",
                    done.unreached.join(", ")
                );
            }
        }
        SessionAction::Delete { id } => {
            let response = reach(call(Method::DELETE, &format!("sessions/{id}"))).await?;
            if !response.status().is_success() {
                return Err(refusal(&Method::DELETE, response, &args.admin).await);
            }
            let done: Removed = response.json().await?;
            println!("removed `{id}`{}", deferred(done.deferred));
        }
    }
    Ok(())
}

/// Why the admin API refused a request, from its answer. A 404 is either the
/// admin API's word that a session is gone, or the sign of a server that has
/// no admin API at all, most often the proxy's own MCP listener.
async fn refusal(method: &Method, response: reqwest::Response, admin: &Url) -> anyhow::Error {
    let status = response.status();
    let url = response.url().clone();
    let body = response.text().await.unwrap_or_default();
    let body = body.trim();
    match status {
        StatusCode::UNAUTHORIZED => {
            anyhow::anyhow!("the admin API wants a token: give --admin-token-file")
        }
        StatusCode::NOT_FOUND if body.starts_with(ADMIN_NO_SESSION) => {
            anyhow::anyhow!("{body} (it may have expired or been evicted)")
        }
        StatusCode::NOT_FOUND => anyhow::anyhow!(
            "{method} {url} answered {status}: there is no admin API at {admin}. --admin takes \
             the address the proxy serves its admin API on, set by `shadowcat reverse \
             --admin-listen` ({DEFAULT_ADMIN_LISTEN} by default), not the MCP address of its \
             --listen"
        ),
        _ if body.is_empty() => anyhow::anyhow!("{method} {url} answered {status}"),
        _ => anyhow::anyhow!("{method} {url} answered {status}: {body}"),
    }
}

fn deferred(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} busy: their requests in flight were ended, and they leave as those answer)")
    }
}

/// One row per session; a cluster's listing names the instance holding each.
fn print_table(rows: &[SessionRow]) {
    let cluster = rows.iter().any(|r| r.instance.is_some());
    let mut columns = vec![("ID", Align::Left)];
    if cluster {
        columns.push(("INSTANCE", Align::Left));
    }
    columns.extend([
        ("STATE", Align::Left),
        ("AGE s", Align::Right),
        ("IDLE s", Align::Right),
        ("REQUESTS", Align::Right),
        ("BYTES", Align::Right),
        ("IN FLIGHT", Align::Right),
        ("UPSTREAM", Align::Left),
    ]);
    let mut table = TextTable::new(columns);
    for r in rows {
        let mut cells = vec![r.id.clone()];
        if cluster {
            cells.push(r.instance.clone().unwrap_or_else(|| "-".to_owned()));
        }
        cells.extend([
            r.state.clone(),
            format!("{:.1}", r.age_seconds),
            format!("{:.1}", r.idle_seconds),
            r.requests.to_string(),
            r.bytes.to_string(),
            r.in_flight.to_string(),
            r.upstream.clone(),
        ]);
        table.row(cells);
    }
    print!("{}", table.render());
    // The policy is read off the rows: an empty table has none to name.
    let policy = rows
        .first()
        .map(|r| format!(", policy {}", r.policy))
        .unwrap_or_default();
    if !cluster {
        println!("{} session(s){policy}", rows.len());
        return;
    }
    let mut instances: Vec<&str> = rows.iter().filter_map(|r| r.instance.as_deref()).collect();
    instances.sort_unstable();
    instances.dedup();
    println!(
        "{} session(s) on {} instance(s){policy}",
        rows.len(),
        instances.len()
    );
}
