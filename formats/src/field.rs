//! How library errors name settings: a config field in backticks (`` `kd_weight` ``). The
//! libraries know their config structs, not the faces over them, so each face puts its own
//! name on a field with [`rename`]: the CLI its flag (`--kd-weight`), the Python module its
//! keyword argument.

/// `message` with every backticked field name (lowercase ASCII letters, digits and `_`,
/// starting with a letter) replaced by `name(field)`; backticked text that is not a field name,
/// or that `name` does not know (`None`), is left as it is.
pub fn rename(message: &str, name: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('`') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('`');
        let field = close.map(|c| &after[..c]).filter(|f| is_field(f));
        match field.and_then(|f| name(f).map(|n| (f, n))) {
            Some((f, n)) => {
                out.push_str(&n);
                rest = &after[f.len() + 1..];
            }
            None => {
                out.push('`');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_field(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::rename;

    #[test]
    fn fields_get_the_face_s_names_and_other_backticks_stay() {
        let flag = |f: &str| (f != "unknown").then(|| format!("--{}", f.replace('_', "-")));
        assert_eq!(
            rename("`kd_weight` 2 must lie in [0, 1]; see `lr`", flag),
            "--kd-weight 2 must lie in [0, 1]; see --lr"
        );
        assert_eq!(
            rename("run `pip install x` or set `unknown`", flag),
            "run `pip install x` or set `unknown`"
        );
        assert_eq!(rename("a lone ` and `Mean`", flag), "a lone ` and `Mean`");
        assert_eq!(rename("no fields", flag), "no fields");
    }
}
