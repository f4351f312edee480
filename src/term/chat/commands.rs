//! Slash commands typed into `edgechat chat`, parsed without a terminal or a server.

use crate::proto::RoomRole;

/// One slash command, its arguments checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/join ROOM`: join a public room (or switch to one you are in).
    Join(String),
    /// `/create NAME [--private] [--read-only]`.
    Create {
        /// The new room's name.
        name: String,
        /// Invite-only instead of public.
        private: bool,
        /// Only moderators post.
        read_only: bool,
    },
    /// `/leave`: the current room.
    Leave,
    /// `/invite USER`.
    Invite(String),
    /// `/dm USER`: open (or switch to) the direct room with USER.
    Dm(String),
    /// `/kick USER [REASON]`.
    Kick(String, String),
    /// `/ban USER [REASON]`.
    Ban(String, String),
    /// `/unban USER`.
    Unban(String),
    /// `/role USER ROLE`.
    Role(String, RoomRole),
    /// `/topic TEXT` (empty clears it).
    Topic(String),
    /// `/edit [#SEQ] TEXT`: your latest message, or the one at SEQ.
    Edit(Option<u64>, String),
    /// `/delete [#SEQ]`: your latest message, or the one at SEQ.
    Delete(Option<u64>),
    /// `/reply #SEQ TEXT`: a reply in the thread of the message at SEQ.
    Reply(u64, String),
    /// `/react #SEQ EMOJI` (`true`) and `/unreact #SEQ EMOJI`.
    React(u64, String, bool),
    /// `/pin #SEQ` (`true`) and `/unpin #SEQ`.
    Pin(u64, bool),
    /// `/search WORDS`: messages in all your rooms that have every word, newest first.
    Search(String),
    /// `/attach PATH [CAPTION]`: uploads the file and sends it here.
    Attach(String, String),
    /// `/save ID [PATH]`: downloads an attachment (to its own name in the current directory).
    Save(String, Option<String>),
    /// `/mute` (`true`) and `/unmute`: this room's notifications.
    Mute(bool),
    /// `/away`: toggles away and online.
    Away,
    /// `/retry`: re-sends the current room's failed messages (same ids: never doubled).
    Retry,
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// The help text `/help` shows, one line per command, and the keys.
pub const HELP: &[&str] = &[
    "/join ROOM           join a public room, or switch to one of yours",
    "/create NAME [--private] [--read-only]",
    "/leave               leave this room",
    "/invite USER         invite USER here",
    "/dm USER             talk to USER directly",
    "/kick USER [REASON]  /ban USER [REASON]  /unban USER",
    "/role USER ROLE      reader, member, moderator or owner",
    "/topic TEXT          set this room's topic",
    "/edit [#SEQ] TEXT    change your latest message (or the one at SEQ)",
    "/delete [#SEQ]       delete your latest message (or the one at SEQ)",
    "/reply #SEQ TEXT     reply to a message, in its thread",
    "/react #SEQ EMOJI    /unreact #SEQ EMOJI   /pin #SEQ   /unpin #SEQ",
    "/search WORDS        messages in your rooms with every word, newest first",
    "/attach PATH [TEXT]  send a file   /save ID [PATH]   save one (ID after its 📎)",
    "/mute  /unmute       this room's notifications",
    "/away                toggle away / online",
    "/retry (Ctrl+R)      send failed messages again",
    "/quit (Ctrl+C)       leave edgechat chat",
    "Tab/Shift+Tab or Alt+Up/Down: next/previous room   Alt+1..9: room N",
    "PageUp/PageDown, mouse wheel: scroll (older history loads as you go)",
    "Alt+Enter or Ctrl+J: new line   Up/Down: input history   Esc: clear input",
];

/// What was wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a command we know.
    #[error("unknown command /{0} (/help lists them)")]
    Unknown(String),
    /// Right command, wrong arguments.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// A role name that is not one.
    #[error("no role `{0}`: reader, member, moderator or owner")]
    BadRole(String),
}

/// Parses `line` if it is a command (starts with one `/`); `None` for a message. `//text`
/// sends `/text` as a message.
pub fn parse(line: &str) -> Option<Result<Command, CommandError>> {
    let rest = line.strip_prefix('/')?;
    if rest.starts_with('/') {
        return None;
    }
    let (word, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    Some(command(&word.to_lowercase(), args).map_err(|e| match e {
        CommandError::Unknown(_) => CommandError::Unknown(super::super::text::clean(word)),
        e => e,
    }))
}

/// A message that starts with `//` is sent with one `/` less.
pub fn message_text(line: &str) -> &str {
    line.strip_prefix("//").map(|_| &line[1..]).unwrap_or(line)
}

fn one_word(args: &str, usage: &'static str) -> Result<String, CommandError> {
    let mut words = args.split_whitespace();
    match (words.next(), words.next()) {
        (Some(w), None) => Ok(w.trim_start_matches('@').to_string()),
        _ => Err(CommandError::Usage(usage)),
    }
}

fn user_and_rest(args: &str, usage: &'static str) -> Result<(String, String), CommandError> {
    let (user, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    if user.is_empty() {
        return Err(CommandError::Usage(usage));
    }
    Ok((user.trim_start_matches('@').to_string(), rest.trim().to_string()))
}

/// `#SEQ` at the start of `args`, and what follows.
fn target_seq(args: &str) -> Result<(Option<u64>, &str), CommandError> {
    let Some(rest) = args.strip_prefix('#') else { return Ok((None, args)) };
    let (num, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    match num.parse::<u64>() {
        Ok(seq) if seq > 0 => Ok((Some(seq), text.trim_start())),
        _ => Err(CommandError::Usage("/edit [#SEQ] TEXT, /delete [#SEQ] (SEQ a number)")),
    }
}

fn command(word: &str, args: &str) -> Result<Command, CommandError> {
    let none = |c: Command, usage: &'static str| {
        if args.is_empty() { Ok(c) } else { Err(CommandError::Usage(usage)) }
    };
    match word {
        "join" | "j" => Ok(Command::Join(one_word(args, "/join ROOM")?)),
        "create" => {
            const USAGE: &str = "/create NAME [--private] [--read-only]";
            let (mut name, mut private, mut read_only) = (None, false, false);
            for w in args.split_whitespace() {
                match w {
                    "--private" => private = true,
                    "--read-only" => read_only = true,
                    flag if flag.starts_with("--") => return Err(CommandError::Usage(USAGE)),
                    _ if name.is_some() => return Err(CommandError::Usage(USAGE)),
                    n => name = Some(n.trim_start_matches('#').to_string()),
                }
            }
            let name = name.ok_or(CommandError::Usage(USAGE))?;
            Ok(Command::Create { name, private, read_only })
        }
        "leave" | "part" => none(Command::Leave, "/leave"),
        "invite" => Ok(Command::Invite(one_word(args, "/invite USER")?)),
        "dm" | "msg" => Ok(Command::Dm(one_word(args, "/dm USER")?)),
        "kick" => {
            let (u, r) = user_and_rest(args, "/kick USER [REASON]")?;
            Ok(Command::Kick(u, r))
        }
        "ban" => {
            let (u, r) = user_and_rest(args, "/ban USER [REASON]")?;
            Ok(Command::Ban(u, r))
        }
        "unban" => Ok(Command::Unban(one_word(args, "/unban USER")?)),
        "role" => {
            let (u, role) = user_and_rest(args, "/role USER ROLE")?;
            if role.is_empty() || role.contains(char::is_whitespace) {
                return Err(CommandError::Usage("/role USER ROLE"));
            }
            let parsed = super::super::names::parse_role(&role)
                .ok_or_else(|| CommandError::BadRole(super::super::text::clean(&role)))?;
            Ok(Command::Role(u, parsed))
        }
        "topic" => Ok(Command::Topic(args.to_string())),
        "edit" => {
            let (seq, text) = target_seq(args)?;
            if text.trim().is_empty() {
                return Err(CommandError::Usage("/edit [#SEQ] TEXT"));
            }
            Ok(Command::Edit(seq, text.to_string()))
        }
        "delete" | "del" => match target_seq(args)? {
            (seq, "") => Ok(Command::Delete(seq)),
            _ => Err(CommandError::Usage("/delete [#SEQ]")),
        },
        "reply" | "re" => match target_seq(args)? {
            (Some(seq), text) if !text.trim().is_empty() => Ok(Command::Reply(seq, text.into())),
            _ => Err(CommandError::Usage("/reply #SEQ TEXT")),
        },
        "react" | "unreact" => match target_seq(args)? {
            (Some(seq), emoji) if !emoji.is_empty() && !emoji.contains(char::is_whitespace) => {
                Ok(Command::React(seq, emoji.into(), word == "react"))
            }
            _ => Err(CommandError::Usage("/react #SEQ EMOJI, /unreact #SEQ EMOJI")),
        },
        "pin" | "unpin" => match target_seq(args)? {
            (Some(seq), "") => Ok(Command::Pin(seq, word == "pin")),
            _ => Err(CommandError::Usage("/pin #SEQ, /unpin #SEQ")),
        },
        "search" | "find" if !args.is_empty() => Ok(Command::Search(args.to_string())),
        "search" | "find" => Err(CommandError::Usage("/search WORDS")),
        "attach" | "file" => match user_and_rest(args, "/attach PATH [CAPTION]") {
            Ok((path, caption)) => Ok(Command::Attach(path, caption)),
            Err(e) => Err(e),
        },
        "save" => {
            let mut words = args.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(id), path, None) => Ok(Command::Save(id.into(), path.map(str::to_string))),
                _ => Err(CommandError::Usage("/save ID [PATH]")),
            }
        }
        "mute" => none(Command::Mute(true), "/mute"),
        "unmute" => none(Command::Mute(false), "/unmute"),
        "away" => none(Command::Away, "/away"),
        "retry" => none(Command::Retry, "/retry"),
        "help" | "?" => Ok(Command::Help),
        "quit" | "exit" | "q" => none(Command::Quit, "/quit"),
        other => Err(CommandError::Unknown(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line).expect("a command").unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn err(line: &str) -> String {
        parse(line).expect("a command").expect_err(line).to_string()
    }

    #[test]
    fn messages_are_not_commands() {
        assert_eq!(parse("hello"), None);
        assert_eq!(parse(" /join x"), None, "only a leading slash");
        assert_eq!(parse("//join x"), None);
        assert_eq!(message_text("//join x"), "/join x");
        assert_eq!(message_text("/x"), "/x");
        assert_eq!(message_text("hi"), "hi");
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(ok("/join #general"), Command::Join("#general".into()));
        assert_eq!(ok("/JOIN  general "), Command::Join("general".into()));
        assert_eq!(
            ok("/create ops --private --read-only"),
            Command::Create { name: "ops".into(), private: true, read_only: true }
        );
        assert_eq!(
            ok("/create --read-only news"),
            Command::Create { name: "news".into(), private: false, read_only: true }
        );
        assert_eq!(ok("/leave"), Command::Leave);
        assert_eq!(ok("/invite @bob"), Command::Invite("bob".into()));
        assert_eq!(ok("/dm bob"), Command::Dm("bob".into()));
        assert_eq!(ok("/kick bob being rude"), Command::Kick("bob".into(), "being rude".into()));
        assert_eq!(ok("/ban bob"), Command::Ban("bob".into(), String::new()));
        assert_eq!(ok("/unban bob"), Command::Unban("bob".into()));
        assert_eq!(ok("/role bob moderator"), Command::Role("bob".into(), RoomRole::Moderator));
        assert_eq!(ok("/topic Release day"), Command::Topic("Release day".into()));
        assert_eq!(ok("/topic"), Command::Topic(String::new()));
        assert_eq!(ok("/edit fixed typo"), Command::Edit(None, "fixed typo".into()));
        assert_eq!(ok("/edit #12 fixed"), Command::Edit(Some(12), "fixed".into()));
        assert_eq!(ok("/delete"), Command::Delete(None));
        assert_eq!(ok("/delete #7"), Command::Delete(Some(7)));
        assert_eq!(ok("/reply #4 me too"), Command::Reply(4, "me too".into()));
        assert_eq!(ok("/react #4 👍"), Command::React(4, "👍".into(), true));
        assert_eq!(ok("/unreact #4 👍"), Command::React(4, "👍".into(), false));
        assert_eq!(
            (ok("/pin #9"), ok("/unpin #9")),
            (Command::Pin(9, true), Command::Pin(9, false))
        );
        assert_eq!((ok("/mute"), ok("/unmute")), (Command::Mute(true), Command::Mute(false)));
        assert_eq!(ok("/search deploy  friday"), Command::Search("deploy  friday".into()));
        assert_eq!(err("/search  "), "usage: /search WORDS");
        assert_eq!(
            ok("/attach ./cat.png look at this"),
            Command::Attach("./cat.png".into(), "look at this".into())
        );
        assert_eq!(ok("/attach notes.txt"), Command::Attach("notes.txt".into(), String::new()));
        assert_eq!(err("/attach"), "usage: /attach PATH [CAPTION]");
        assert_eq!(ok("/save f12"), Command::Save("f12".into(), None));
        assert_eq!(ok("/save f12 /tmp/x"), Command::Save("f12".into(), Some("/tmp/x".into())));
        assert_eq!(err("/save"), "usage: /save ID [PATH]");
        assert_eq!(err("/reply hello"), "usage: /reply #SEQ TEXT");
        assert_eq!(err("/react #4"), "usage: /react #SEQ EMOJI, /unreact #SEQ EMOJI");
        assert_eq!(err("/pin"), "usage: /pin #SEQ, /unpin #SEQ");
        assert_eq!(ok("/away"), Command::Away);
        assert_eq!(ok("/retry"), Command::Retry);
        assert_eq!(ok("/help"), Command::Help);
        assert_eq!(ok("/quit"), Command::Quit);
    }

    #[test]
    fn bad_arguments_say_the_usage() {
        assert_eq!(err("/join"), "usage: /join ROOM");
        assert_eq!(err("/join a b"), "usage: /join ROOM");
        assert!(err("/create").contains("/create NAME"));
        assert!(err("/create a b").contains("/create NAME"));
        assert!(err("/create a --public").contains("/create NAME"));
        assert_eq!(err("/leave now"), "usage: /leave");
        assert_eq!(err("/invite"), "usage: /invite USER");
        assert_eq!(err("/role bob"), "usage: /role USER ROLE");
        assert_eq!(err("/role bob king"), "no role `king`: reader, member, moderator or owner");
        assert_eq!(err("/edit"), "usage: /edit [#SEQ] TEXT");
        assert_eq!(err("/edit #12"), "usage: /edit [#SEQ] TEXT");
        assert!(err("/edit #x text").contains("SEQ a number"));
        assert!(err("/delete #0").contains("SEQ a number"));
        assert_eq!(err("/delete everything"), "usage: /delete [#SEQ]");
        assert_eq!(err("/frobnicate"), "unknown command /frobnicate (/help lists them)");
        assert_eq!(err("/\x1b[2J"), "unknown command /^[[2J (/help lists them)");
    }
}
