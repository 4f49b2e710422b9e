//! Recursive-descent parser for selector strings. Grammar:
//!
//! ```text
//! or      := and ("||" and)*
//! and     := unary ("&&" unary)*
//! unary   := "!" unary | primary
//! primary := "(" or ")" | "all()" | "global()" | "has(" key ")"
//!          | key ("==" | "!=") string
//!          | key ("in" | "not" "in") "{" [string ("," string)*] "}"
//!          | key ("contains" | "starts" "with" | "ends" "with") string
//! ```
//!
//! `all`, `global` and `has` are only keywords when an opening parenthesis
//! follows, so a label may be called `has` or `all`.

use super::{Expr, SelectorError};
use std::collections::BTreeSet;

/// Longest label key we accept (Kubernetes allows 253 + 1 + 63).
const MAX_KEY_LEN: usize = 317;

pub(super) fn parse(text: &str) -> Result<Expr, SelectorError> {
    let mut p = Parser {
        text,
        chars: text.char_indices().collect(),
        pos: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return Ok(Expr::All);
    }
    let e = p.parse_or()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error("expected '&&', '||' or the end of the selector"));
    }
    Ok(e)
}

struct Parser<'a> {
    text: &'a str,
    /// (byte offset, char) pairs; `pos` indexes this, so positions in errors
    /// are character offsets.
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> SelectorError {
        let found = match self.peek() {
            Some(c) => format!(" (found {c:?})"),
            None => " (found the end)".to_string(),
        };
        SelectorError {
            selector: self.text.to_string(),
            position: self.pos,
            message: format!("{}{found}", message.into()),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn rest(&self) -> &str {
        match self.chars.get(self.pos) {
            Some(&(byte, _)) => &self.text[byte..],
            None => "",
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consume `tok` (after whitespace) if it is next.
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.chars().count();
            true
        } else {
            false
        }
    }

    /// Consume the word `word` if it is next and not the prefix of a longer key.
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with(word) && !rest[word.len()..].starts_with(is_key_char) {
            self.pos += word.chars().count();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &str, what: &str) -> Result<(), SelectorError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(format!("expected {what}")))
        }
    }

    fn parse_or(&mut self) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.parse_and()?];
        while self.eat("||") {
            operands.push(self.parse_and()?);
        }
        Ok(Expr::or(operands))
    }

    fn parse_and(&mut self) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.parse_unary()?];
        while self.eat("&&") {
            operands.push(self.parse_unary()?);
        }
        Ok(Expr::and(operands))
    }

    fn parse_unary(&mut self) -> Result<Expr, SelectorError> {
        self.skip_ws();
        // `!` but not `!=` (which would be a key missing before it).
        if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.pos += 1;
            return Ok(Expr::not(self.parse_unary()?));
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr, SelectorError> {
        self.skip_ws();
        if self.eat("(") {
            let e = self.parse_or()?;
            self.expect(")", "')' to close the group")?;
            return Ok(e);
        }
        let start = self.pos;
        let key = self.parse_key()?;
        let call_follows = {
            self.skip_ws();
            self.peek() == Some('(')
        };
        if call_follows {
            match key.as_str() {
                "all" | "global" => {
                    self.pos += 1;
                    self.expect(")", &format!("')': {key}() takes no arguments"))?;
                    return Ok(if key == "all" {
                        Expr::All
                    } else {
                        Expr::Global
                    });
                }
                "has" => {
                    self.pos += 1;
                    let k = self.parse_key()?;
                    self.expect(")", "')' to close has(")?;
                    return Ok(Expr::Has(k));
                }
                _ => {
                    self.pos = start;
                    return Err(self.error(format!(
                        "unknown function {key:?}: expected all(), global() or has(key)"
                    )));
                }
            }
        }
        self.skip_ws();
        if self.eat("==") {
            return Ok(Expr::Eq(key, self.parse_string()?));
        }
        if self.eat("!=") {
            return Ok(Expr::Ne(key, self.parse_string()?));
        }
        if self.eat_word("in") {
            return Ok(Expr::In(key, self.parse_set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.error("expected 'in' after 'not'"));
            }
            return Ok(Expr::NotIn(key, self.parse_set()?));
        }
        if self.eat_word("contains") {
            return Ok(Expr::Contains(key, self.parse_string()?));
        }
        if self.eat_word("starts") {
            if !self.eat_word("with") {
                return Err(self.error("expected 'with' after 'starts'"));
            }
            return Ok(Expr::StartsWith(key, self.parse_string()?));
        }
        if self.eat_word("ends") {
            if !self.eat_word("with") {
                return Err(self.error("expected 'with' after 'ends'"));
            }
            return Ok(Expr::EndsWith(key, self.parse_string()?));
        }
        Err(self.error(format!(
            "expected an operator after label {key:?}: one of ==, !=, in, not in, contains, starts with, ends with"
        )))
    }

    fn parse_key(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(is_key_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error(
                "expected a label key ([A-Za-z0-9_./-]), '(', '!', all(), global() or has(key)",
            ));
        }
        if self.pos - start > MAX_KEY_LEN {
            self.pos = start;
            return Err(self.error(format!("label key longer than {MAX_KEY_LEN} characters")));
        }
        Ok(self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect())
    }

    fn parse_string(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.error("expected a quoted string ('...' or \"...\")")),
        };
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == quote {
                let value = self.chars[start..self.pos]
                    .iter()
                    .map(|&(_, c)| c)
                    .collect();
                self.pos += 1;
                return Ok(value);
            }
            self.pos += 1;
        }
        self.pos = open;
        Err(self.error(format!("unterminated string: no closing {quote}")))
    }

    fn parse_set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect("{", "'{' to open a set of strings")?;
        let mut set = BTreeSet::new();
        if self.eat("}") {
            return Ok(set);
        }
        loop {
            set.insert(self.parse_string()?);
            if self.eat("}") {
                return Ok(set);
            }
            self.expect(",", "',' or '}' in the set")?;
        }
    }
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}
