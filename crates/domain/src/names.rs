//! Resource name rules (Azure's).
use crate::{DomainError, Result};

fn invalid(kind: &'static str, name: &str, rule: &'static str) -> DomainError {
    DomainError::InvalidName {
        kind,
        name: name.chars().take(128).collect(),
        rule,
    }
}

/// Resource groups: 1–90 chars of letters, digits, `_`, `-`, `.`, `(`, `)`; not ending in `.`.
pub fn resource_group(name: &str) -> Result<()> {
    const RULE: &str = "1-90 characters of letters, digits, underscores, hyphens, periods and parentheses, not ending in a period";
    let ok = !name.is_empty()
        && name.chars().count() <= 90
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(invalid("resource group", name, RULE))
    }
}

/// Key vaults: 3–24 chars, letters digits and hyphens, starting with a letter, ending with a
/// letter or digit, no consecutive hyphens.
pub fn vault(name: &str) -> Result<()> {
    const RULE: &str = "3-24 characters of letters, digits and hyphens, starting with a letter, ending with a letter or digit, without consecutive hyphens";
    let b = name.as_bytes();
    let ok = (3..=24).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(invalid("vault", name, RULE))
    }
}

/// User-assigned identities: 3–128 chars, letters digits `-` `_`, starting with a letter or digit.
pub fn identity(name: &str) -> Result<()> {
    const RULE: &str = "3-128 characters of letters, digits, hyphens and underscores, starting with a letter or digit";
    let b = name.as_bytes();
    let ok = (3..=128).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(invalid("identity", name, RULE))
    }
}

/// A GUID in its canonical 8-4-4-4-12 form (role assignment names, subscription ids).
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Subscription aliases and display names: 1–64 printable chars without path separators.
pub fn alias(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "alias",
            name,
            "1-64 characters of letters, digits, '-', '_' and '.'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names() {
        assert!(vault("kv1").is_ok());
        assert!(vault("my-vault-01").is_ok());
        for bad in [
            "a",
            "ab",
            "1kv",
            "kv-",
            "k--v",
            "a_b",
            "abcdefghijabcdefghijabcde",
            "kv.x",
        ] {
            assert!(vault(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names() {
        assert!(resource_group("rg-1_(x).y").is_ok());
        assert!(resource_group("").is_err());
        assert!(resource_group("a.").is_err());
        assert!(resource_group("a<b>").is_err());
        assert!(resource_group(&"a".repeat(91)).is_err());
    }

    #[test]
    fn guids() {
        assert!(is_guid("8e3af657-a8ff-443c-a75c-2fe8c4bcb635"));
        assert!(!is_guid("8e3af657a8ff443ca75c2fe8c4bcb635"));
        assert!(!is_guid("8e3af657-a8ff-443c-a75c-2fe8c4bcb63z"));
    }
}
