//! Runs one chat command for one chat user and words the reply: short,
//! numbered, fit for a phone screen.
//!
//! "The last list shown" (what `issue N`, `join N`, ... refer to) is kept
//! per chat user in KV for 30 days: a list is written once per search and
//! read by the next command, which a chat user sends seconds later and
//! usually to the same location, so KV's eventual consistency is a fit
//! and the primary pays nothing for it.

use serde_json::Value;

use super::command::{self, Command, LIST_LEN};
use super::ChatUser;
use crate::domain::ids::Id;
use crate::domain::writes::NewPost;
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult};
use crate::routes::issue_writes::Write;
use crate::routes::membership;
use crate::store::membership::Op;

const LIST_TTL_SECS: u64 = 30 * 86_400;
/// Longest reply; both channels allow 4096 characters.
const MAX_REPLY_CHARS: usize = 1_500;

/// One entry of a list shown to a user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    pub id: String,
    pub name: String,
}

fn list_key(who: &ChatUser) -> String {
    format!("bot:list:{}:{}", who.provider, who.subject)
}

async fn remember_list(ctx: &Ctx, who: &ChatUser, shown: &[Shown]) {
    let Ok(kv) = ctx.kv() else { return };
    let Ok(json) = serde_json::to_string(shown) else {
        return;
    };
    let put = match kv.put(&list_key(who), json) {
        Ok(put) => put.expiration_ttl(LIST_TTL_SECS).execute().await,
        Err(e) => Err(e),
    };
    if let Err(e) = put {
        tracing::warn!(request_id = %ctx.request_id, error = ?e, "cannot remember a chat list");
    }
}

/// Issue `n` of the last list shown to `who`.
async fn listed(ctx: &Ctx, who: &ChatUser, n: usize) -> AppResult<Option<Shown>> {
    let kv = ctx.kv()?;
    let shown: Vec<Shown> = kv
        .get(&list_key(who))
        .json()
        .await
        .map_err(|e| AppError::internal(format!("chat list: {e:?}")))?
        .unwrap_or_default();
    Ok(shown.into_iter().nth(n - 1))
}

fn shown_of(items: &[Value]) -> Vec<Shown> {
    items
        .iter()
        .filter_map(|item| {
            Some(Shown {
                id: item.get("id")?.as_str()?.to_owned(),
                name: item.get("name")?.as_str()?.to_owned(),
            })
        })
        .take(LIST_LEN)
        .collect()
}

fn count_of(item: &Value) -> i64 {
    item.get("rioter_count")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn people(n: i64) -> String {
    if n == 1 {
        "1 person".to_owned()
    } else {
        format!("{n} people")
    }
}

/// `1. Name (12 people)` lines.
pub fn numbered(items: &[Value]) -> String {
    items
        .iter()
        .take(LIST_LEN)
        .enumerate()
        .map(|(i, item)| {
            let name = item.get("name").and_then(Value::as_str).unwrap_or("?");
            format!("{}. {} ({})", i + 1, name, people(count_of(item)))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn clip(reply: String) -> String {
    if reply.chars().count() <= MAX_REPLY_CHARS {
        return reply;
    }
    let mut clipped: String = reply.chars().take(MAX_REPLY_CHARS - 1).collect();
    clipped.push('…');
    clipped
}

const NO_LIST: &str =
    "I don't know which issue you mean. Send \"search WORDS\" or \"my issues\" first, then use the numbers in that list.";

/// The reply to `text` from `who`. Errors that mean "try later" are worded
/// for the chat; others propagate.
pub async fn answer(ctx: &Ctx, who: &ChatUser, text: &str) -> String {
    match run(ctx, who, command::parse(text)).await {
        Ok(reply) => clip(reply),
        Err(e) if e.status == 404 => "That issue no longer exists.".to_owned(),
        Err(e) if e.status == 400 || e.status == 409 || e.status == 422 => {
            format!("Sorry: {}", e.message)
        }
        Err(e) => {
            tracing::warn!(request_id = %ctx.request_id, code = %e.code, "chat command failed");
            "Sorry, something went wrong on our side. Please try again in a minute.".to_owned()
        }
    }
}

async fn run(ctx: &Ctx, who: &ChatUser, command: Command) -> AppResult<String> {
    let pick = |n: usize| async move {
        let shown = listed(ctx, who, n).await?;
        Ok::<_, AppError>(match shown {
            Some(s) => Some((Id::parse(&s.id, "issue")?, s.name)),
            None => None,
        })
    };
    Ok(match command {
        Command::Help => command::HELP.to_owned(),
        Command::Link => command::LINK_HELP.to_owned(),
        Command::Unknown(problem) => command::explain(problem),
        Command::Search(words) => {
            let found = super::search(ctx, &words, LIST_LEN).await?;
            let items = found["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return Ok(format!(
                    "No issues match \"{words}\". Try other words, or fewer."
                ));
            }
            remember_list(ctx, who, &shown_of(&items)).await;
            format!(
                "Issues matching \"{words}\":\n{}\n\nSend \"issue N\" for more, or \"join N\".",
                numbered(&items)
            )
        }
        Command::MyIssues => {
            let Some(user) = super::find_user(ctx, who).await? else {
                return Ok(
                    "You haven't joined any issues yet. Send \"search WORDS\" to find one."
                        .to_owned(),
                );
            };
            let mine: Vec<Value> = super::my_issues(ctx, &user)
                .await?
                .into_iter()
                .map(Value::Object)
                .collect();
            if mine.is_empty() {
                return Ok(
                    "You haven't joined any issues yet. Send \"search WORDS\" to find one."
                        .to_owned(),
                );
            }
            remember_list(ctx, who, &shown_of(&mine)).await;
            let more = mine.len().saturating_sub(LIST_LEN);
            let tail = if more > 0 {
                format!("\n…and {more} more on the website.")
            } else {
                String::new()
            };
            format!("Your issues:\n{}{tail}", numbered(&mine))
        }
        Command::Issue(n) => {
            let Some((id, _)) = pick(n).await? else {
                return Ok(NO_LIST.to_owned());
            };
            describe(&super::issue(ctx, &id).await?)
        }
        Command::Actions(n) => {
            let Some((id, name)) = pick(n).await? else {
                return Ok(NO_LIST.to_owned());
            };
            let found = super::actions(ctx, &id).await?;
            let items = found["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return Ok(format!("No actions for \"{name}\" yet."));
            }
            let lines = items
                .iter()
                .take(LIST_LEN)
                .enumerate()
                .map(|(i, a)| {
                    let title = a.get("title").and_then(Value::as_str).unwrap_or("?");
                    match a.get("external_url").and_then(Value::as_str) {
                        Some(url) if !url.is_empty() => format!("{}. {title} {url}", i + 1),
                        _ => format!("{}. {title}", i + 1),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            format!("What you can do about \"{name}\":\n{lines}")
        }
        Command::Join(n) | Command::Leave(n) => {
            let op = if matches!(command, Command::Join(_)) {
                Op::Join
            } else {
                Op::Leave
            };
            let Some((id, name)) = pick(n).await? else {
                return Ok(NO_LIST.to_owned());
            };
            let user = match op {
                Op::Join => super::ensure_user(ctx, who).await?,
                Op::Leave => match super::find_user(ctx, who).await? {
                    Some(user) => user,
                    None => return Ok(format!("You are not in \"{name}\".")),
                },
            };
            let answer = membership::change(ctx, op, &id, &user, None).await?;
            let count = people(answer.rioter_count);
            match (op, answer.changed) {
                (Op::Join, true) => format!("You joined \"{name}\". {count} now."),
                (Op::Join, false) => format!("You are already in \"{name}\" ({count})."),
                (Op::Leave, true) => format!("You left \"{name}\". {count} now."),
                (Op::Leave, false) => format!("You are not in \"{name}\"."),
            }
        }
        Command::Post(n, content) => {
            let Some((id, name)) = pick(n).await? else {
                return Ok(NO_LIST.to_owned());
            };
            let post = NewPost::parse(Some(&serde_json::json!({ "content": content })))?;
            let user = super::ensure_user(ctx, who).await?;
            let write = Write::Post(id, post);
            crate::routes::issue_writes::perform(
                ctx,
                &write,
                &user,
                None,
                crate::domain::time::now_ms(),
            )
            .await?;
            format!("Posted to \"{name}\".")
        }
    })
}

/// An issue in a few lines.
pub fn describe(issue: &Value) -> String {
    let name = issue.get("name").and_then(Value::as_str).unwrap_or("?");
    let mut lines = vec![format!("{name} ({})", people(count_of(issue)))];
    if let Some(d) = issue.get("description").and_then(Value::as_str) {
        let d = d.trim();
        if !d.is_empty() {
            let short: String = d.chars().take(280).collect();
            lines.push(if short.len() < d.len() {
                format!("{short}…")
            } else {
                short
            });
        }
    }
    let orgs: Vec<String> = issue
        .get("organisations")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(3)
                .filter_map(|o| o.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !orgs.is_empty() {
        lines.push(format!("Responsible: {}", orgs.join(", ")));
    }
    if let Some(n) = issue.get("action_count").and_then(Value::as_i64) {
        if n > 0 {
            lines.push(format!("{n} actions: send \"actions N\" to see them."));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_are_numbered_and_counted() {
        let items = vec![
            json!({"id": "a", "name": "Potholes", "rioter_count": 12}),
            json!({"id": "b", "name": "Bus lanes", "rioter_count": 1}),
        ];
        assert_eq!(
            numbered(&items),
            "1. Potholes (12 people)\n2. Bus lanes (1 person)"
        );
        assert_eq!(
            shown_of(&items),
            vec![
                Shown {
                    id: "a".into(),
                    name: "Potholes".into()
                },
                Shown {
                    id: "b".into(),
                    name: "Bus lanes".into()
                }
            ]
        );
    }

    #[test]
    fn lists_stop_at_the_list_length() {
        let items: Vec<Value> = (0..9)
            .map(|i| json!({"id": i.to_string(), "name": "x", "rioter_count": 0}))
            .collect();
        assert_eq!(numbered(&items).lines().count(), LIST_LEN);
        assert_eq!(shown_of(&items).len(), LIST_LEN);
    }

    #[test]
    fn an_issue_in_a_few_lines() {
        let issue = json!({
            "name": "Potholes", "rioter_count": 3, "description": "d".repeat(400),
            "organisations": [{"name": "Council"}], "action_count": 2
        });
        let text = describe(&issue);
        assert!(text.starts_with("Potholes (3 people)\n"));
        assert!(text.contains('…'));
        assert!(text.contains("Responsible: Council"));
        assert!(text.contains("2 actions"));
    }

    #[test]
    fn replies_are_clipped() {
        let long = clip("x".repeat(5_000));
        assert_eq!(long.chars().count(), MAX_REPLY_CHARS);
        assert!(long.ends_with('…'));
        assert_eq!(clip("short".into()), "short");
    }
}
