//! `vpop models [NAME]`.

use crate::model::{library, Model};

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// Print this model's source instead of the list.
    pub name: Option<String>,
}

pub fn run(args: &ModelsArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.name {
        let m = library::get(name).ok_or_else(|| {
            let hint = crate::diag::did_you_mean(name, library::names());
            anyhow::anyhow!("no built-in model '{name}'; `vpop models` lists them{hint}")
        })?;
        print!("{}", m.source);
        return Ok(());
    }
    for m in library::MODELS {
        let params = match Model::parse(m.name, m.source) {
            Ok(model) => model
                .params
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("(does not parse: {e})"),
        };
        println!("{:<20} {}", m.name, summary(m.source));
        println!("{:<20} parameters: {params}", "");
    }
    Ok(())
}

/// A model's one-line summary: the first sentence of the comment that opens its file. The
/// first comment line goes on over the next ones while its sentence does: until a period ends
/// it, or a line starts anew (a capital, a citation, a blank comment line, code), unless a
/// parenthesis is still open.
fn summary(source: &str) -> String {
    let mut comments = source
        .lines()
        .map_while(|l| l.trim_start().strip_prefix('#'))
        .map(str::trim);
    let mut text = comments.next().unwrap_or_default().to_string();
    for line in comments {
        let open = text.matches('(').count() > text.matches(')').count();
        let ended = text.ends_with('.');
        let goes_on = line.chars().next().is_some_and(char::is_lowercase);
        if line.is_empty() || ended || !(goes_on || open) {
            break;
        }
        text.push(' ');
        text.push_str(line);
    }
    // The first sentence: up to a period followed by a space, outside parentheses and after
    // no abbreviation ("(Gibiansky et al. 2008)", "e.g. ").
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '.' if depth == 0 && text[i + 1..].starts_with(' ') => {
                let word = text[..i].rsplit([' ', '(']).next().unwrap_or_default();
                if !["al", "e.g", "i.e", "cf", "vs"].contains(&word) {
                    return text[..=i].to_string();
                }
            }
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first line that breaks mid-sentence goes on to the sentence's end; a title line
    /// followed by a citation or a note stays alone.
    #[test]
    fn summaries_are_whole_first_sentences() {
        let ddi = library::get("ddi_ritonavir_cyp3a").unwrap().source;
        assert_eq!(
            summary(ddi),
            "two-drug interaction: a ritonavir-like perpetrator inactivates hepatic CYP3A \
             (mechanism-based inhibition) and a midazolam-like victim loses the CYP3A share of \
             its clearance"
        );
        let emax = library::get("effect_emax").unwrap().source;
        assert_eq!(
            summary(emax),
            "effect-compartment model with a sigmoid Emax response, driven by one-compartment \
             oral kinetics"
        );
        assert_eq!(
            summary("# a first line\n# that goes on. And more\n# here\nstate a\n"),
            "a first line that goes on."
        );
        assert_eq!(summary("# one line\n#\n# another\n"), "one line");
        assert_eq!(
            summary("# a model (Smith et al. 2008), e.g. this. Then more\n"),
            "a model (Smith et al. 2008), e.g. this."
        );
        let qss = library::get("tmdd_qss").unwrap().source;
        assert!(
            summary(qss).ends_with("(Gibiansky et al. 2008)"),
            "{}",
            summary(qss)
        );
        assert_eq!(summary("state a\n"), "");
        for m in library::MODELS {
            let s = summary(m.source);
            let open = s.matches('(').count() > s.matches(')').count();
            assert!(!s.is_empty() && !open, "{}: {s}", m.name);
        }
    }
}
