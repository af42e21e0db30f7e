//! `bench --draft`: speculative decode beside plain decode, and what a pass of the target
//! costs for each number of tokens it checks (the lever: for a streamed target a pass over
//! 9 tokens costs about what a pass over 1 does).

use anyhow::Result;
use cardinfer_stream::{GenerateOptions, LoadedModel, Logits, SpeculativeSession, TextModel};

/// The pass sizes `pass_costs` measures: every size up to 9 tokens, then k + 1 tokens for
/// k = 16, 32, 64 drafted tokens, and `max` itself, none above `max`.
pub fn pass_sizes(max: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = (1..=max.min(9)).chain([17, 33, 65, max]).filter(|&n| n <= max).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Seconds of one target pass over `n` tokens after `ids` (median of `reps`), for each `n`
/// of `pass_sizes(max)`.
pub fn pass_costs(model: &dyn TextModel, ids: &[u32], max: usize, reps: usize) -> Result<Vec<(usize, f64)>> {
    let mut kv = model.new_cache();
    model.forward(ids, &mut kv, Logits::Last)?.to_vec2::<f32>()?;
    let base = kv.len();
    let chunk: Vec<u32> = ids.iter().cycle().take(max).copied().collect();
    let sizes = pass_sizes(max);
    let mut costs = Vec::with_capacity(sizes.len());
    for n in sizes {
        let secs = crate::common::median_secs(reps, || {
            let which = if n == 1 { Logits::Last } else { Logits::All };
            model.forward(&chunk[..n], &mut kv, which)?.to_vec2::<f32>()?;
            kv.truncate(base)?;
            Ok(())
        })?;
        costs.push((n, secs));
    }
    Ok(costs)
}

/// What one speculative decode run gave.
pub struct SpeculativeRun {
    pub tok_s: f64,
    pub generated: Vec<u32>,
    pub stats: cardinfer_stream::SpeculationStats,
}

/// Greedy speculative decode of `n` tokens after `first`, `reps` times (the median rate);
/// the first token comes from the prompt pass, as in plain decode.
pub fn decode(
    target: &LoadedModel,
    draft: &LoadedModel,
    args: &crate::draft::DraftArgs,
    first: u32,
    n: usize,
    reps: usize,
) -> Result<SpeculativeRun> {
    let mut session = SpeculativeSession::new(&target.model, &draft.model, None, args.options())?;
    let options = GenerateOptions { max_tokens: n + 1, ..Default::default() };
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps {
        session.reset();
        let out = session.generate(&[first], &options, |_| {})?;
        runs.push(out);
    }
    runs.sort_by(|a, b| a.decode_tok_s().total_cmp(&b.decode_tok_s()));
    let median = runs.swap_remove(runs.len() / 2);
    let stats = median.speculation.clone().unwrap_or_default();
    Ok(SpeculativeRun {
        tok_s: median.decode_tok_s(),
        generated: median.generated_ids[..n.min(median.generated_ids.len())].to_vec(),
        stats,
    })
}

/// Prints the pass costs as a table.
pub fn print_pass_costs(costs: &[(usize, f64)]) {
    println!("| tokens in the pass | ms | ms per token |");
    println!("|---|---|---|");
    for (n, secs) in costs {
        println!("| {n} | {:.2} | {:.2} |", secs * 1e3, secs * 1e3 / *n as f64);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pass_sizes_cover_short_passes_and_the_issue_s_k() {
        assert_eq!(super::pass_sizes(9), (1..=9).collect::<Vec<_>>());
        assert_eq!(super::pass_sizes(3), vec![1, 2, 3]);
        assert_eq!(super::pass_sizes(65), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 33, 65]);
        assert_eq!(super::pass_sizes(20), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 20]);
    }
}
