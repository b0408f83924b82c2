//! The LLM helpers of the original tracing module: which provider a model
//! name belongs to, and what a call cost.
//!
//! The rules and prices are the original's, kept as they were so that
//! traces and dashboards built on its figures keep their meaning: a model
//! name is matched by substring, case-insensitively, in the order listed,
//! and prices are US dollars per 1,000 tokens.

/// Substrings that name a provider, checked in this order; the first match
/// wins.
const PROVIDERS: &[(&str, &[&str])] = &[
    (
        "openai",
        &[
            "gpt-",
            "text-davinci",
            "text-curie",
            "text-babbage",
            "text-ada",
        ],
    ),
    ("anthropic", &["claude", "anthropic"]),
    ("google", &["palm", "gemini", "bard"]),
    ("azure", &["azure"]),
    ("local", &["llama", "mistral", "mixtral", "local"]),
];

/// What a name matching none of [`PROVIDERS`] (or no name) is.
const UNKNOWN: &str = "unknown";

/// `(substring, input price, output price)` in US dollars per 1,000
/// tokens, checked in this order; the first match wins. As in the
/// original, `gpt-4` comes before `gpt-4-turbo`, so every `gpt-4…` model
/// (`gpt-4-turbo` and `gpt-4o` included) is priced as `gpt-4`.
const PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4", 0.03, 0.06),
    ("gpt-4-turbo", 0.01, 0.03),
    ("gpt-3.5-turbo", 0.0005, 0.0015),
    ("claude-3-opus", 0.015, 0.075),
    ("claude-3-sonnet", 0.003, 0.015),
    ("claude-3-haiku", 0.00025, 0.00125),
];

/// The provider of `model_name`: `"openai"`, `"anthropic"`, `"google"`,
/// `"azure"`, `"local"` or `"unknown"` (also for `None` or a blank name).
///
/// ```
/// use trace_writer::pricing::detect_provider;
/// assert_eq!(detect_provider(Some("GPT-4o-mini")), "openai");
/// assert_eq!(detect_provider(Some("claude-3-haiku")), "anthropic");
/// assert_eq!(detect_provider(Some("Llama-3-8B")), "local");
/// assert_eq!(detect_provider(None), "unknown");
/// ```
pub fn detect_provider(model_name: Option<&str>) -> &'static str {
    let Some(name) = normalized(model_name) else {
        return UNKNOWN;
    };
    PROVIDERS
        .iter()
        .find(|(_, marks)| marks.iter().any(|m| name.contains(m)))
        .map_or(UNKNOWN, |(provider, _)| provider)
}

/// The cost in US dollars of a call to `model_name` with these token
/// counts, or `None` for a model without a price (or a blank name).
///
/// ```
/// use trace_writer::pricing::calculate_cost;
/// let cost = calculate_cost("gpt-3.5-turbo", 1000, 2000).unwrap();
/// assert!((cost - 0.0035).abs() < 1e-12);
/// assert_eq!(calculate_cost("my-local-model", 10, 10), None);
/// ```
pub fn calculate_cost(model_name: &str, input_tokens: i64, output_tokens: i64) -> Option<f64> {
    let name = normalized(Some(model_name))?;
    PRICES
        .iter()
        .find(|(mark, _, _)| name.contains(mark))
        .map(|&(_, input, output)| {
            input_tokens as f64 / 1000.0 * input + output_tokens as f64 / 1000.0 * output
        })
}

/// The name trimmed and lower-cased, or `None` if blank.
fn normalized(name: Option<&str>) -> Option<String> {
    let name = name?.trim().to_lowercase();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_in_order() {
        let cases = [
            (Some("gpt-4o"), "openai"),
            (Some("  text-ada-001 "), "openai"),
            (Some("Claude-3-Opus"), "anthropic"),
            (Some("anthropic/whatever"), "anthropic"),
            (Some("gemini-1.5-pro"), "google"),
            (Some("palm-2"), "google"),
            (Some("my-azure-deployment"), "azure"),
            (Some("mixtral-8x7b"), "local"),
            (Some("qwen2.5-7b"), "unknown"),
            (Some("   "), "unknown"),
            (Some(""), "unknown"),
            (None, "unknown"),
            // The first rule that matches wins: "gpt-" before "azure".
            (Some("azure-gpt-4"), "openai"),
            // "claude" before "local".
            (Some("local-claude"), "anthropic"),
        ];
        for (name, want) in cases {
            assert_eq!(detect_provider(name), want, "{name:?}");
        }
    }

    #[test]
    fn prices_per_thousand_tokens() {
        let close = |a: Option<f64>, b: f64| (a.expect("priced") - b).abs() < 1e-12;
        assert!(close(calculate_cost("gpt-4", 1000, 1000), 0.09));
        // gpt-4 is listed first, so it also prices gpt-4-turbo and gpt-4o.
        assert!(close(calculate_cost("gpt-4-turbo", 1000, 1000), 0.09));
        assert!(close(calculate_cost("GPT-4o-mini", 2000, 0), 0.06));
        assert!(close(calculate_cost("gpt-3.5-turbo", 1000, 1000), 0.002));
        assert!(close(calculate_cost("claude-3-opus", 1000, 1000), 0.09));
        assert!(close(
            calculate_cost("claude-3-sonnet-2024", 1000, 1000),
            0.018
        ));
        assert!(close(calculate_cost("claude-3-haiku", 4000, 800), 0.002));
        assert!(close(calculate_cost("gpt-4", 0, 0), 0.0));
        assert_eq!(calculate_cost("claude-2", 10, 10), None);
        assert_eq!(calculate_cost("", 10, 10), None);
        assert_eq!(calculate_cost("  ", 10, 10), None);
    }
}
