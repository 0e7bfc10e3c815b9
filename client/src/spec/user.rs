//! A container's user as the image names it: looked up in the image's own passwd and group
//! files, which the caller reads from the rootfs (inside it: a link in the image must not
//! reach the host's).

use super::{Error, Result};

fn parse_id(s: &str, what: &str) -> Result<u32> {
    let n: u64 = s
        .parse()
        .map_err(|_| Error::invalid(format!("{what} {s:?} is not a number")))?;
    if n >= u32::MAX as u64 {
        return Err(Error::invalid(format!("{what} {n} is out of range")));
    }
    Ok(n as u32)
}

/// Resolves `user` (name or uid, optionally `:group` or `:gid`) against the image's
/// /etc/passwd and /etc/group, given as text (empty when the image has none): (uid, gid,
/// supplementary gids including the primary).
pub fn resolve_user(passwd: &str, group: &str, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || f[2] == u));
    let (uid, name, mut gid) = match (&entry, u.chars().all(|c| c.is_ascii_digit())) {
        (Some(f), _) => (
            parse_id(f[2], "uid")?,
            f[0].to_string(),
            parse_id(f[3], "gid")?,
        ),
        (None, true) => (parse_id(u, "uid")?, String::new(), 0),
        (None, false) => {
            return Err(Error::invalid(format!(
                "user {u:?} is not in the image's /etc/passwd"
            )))
        }
    };
    if let Some(g) = g {
        gid = match group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && (f[0] == g || f[2] == g))
        {
            Some(f) => parse_id(f[2], "gid")?,
            None if g.chars().all(|c| c.is_ascii_digit()) => parse_id(g, "gid")?,
            None => {
                return Err(Error::invalid(format!(
                    "group {g:?} is not in the image's /etc/group"
                )))
            }
        };
    }
    let mut extra = vec![gid];
    if !name.is_empty() {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(id) = parse_id(f[2], "gid") {
                    if !extra.contains(&id) {
                        extra.push(id);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_in_the_image() {
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
        let group = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\n";
        assert_eq!(
            resolve_user(passwd, group, "app").unwrap(),
            (1000, 1000, vec![1000, 10])
        );
        assert_eq!(
            resolve_user(passwd, group, "app:wheel").unwrap(),
            (1000, 10, vec![10])
        );
        assert_eq!(resolve_user("", "", "42:7").unwrap(), (42, 7, vec![7]));
        let nobody = resolve_user(passwd, group, "nobody").unwrap_err();
        assert_eq!(
            nobody.to_string(),
            "user \"nobody\" is not in the image's /etc/passwd: invalid argument"
        );
        assert!(resolve_user("", "", "4294967295").is_err());
        assert!(resolve_user(passwd, group, "app:staff").is_err());
    }
}
