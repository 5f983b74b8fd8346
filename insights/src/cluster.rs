//! Deterministic k-medoids over cosine distance, k chosen by the mean silhouette, and the
//! paraphrase grouping used for unanswered questions. Vectors are L2-normalised (the e5
//! embedder's output), so cosine similarity is a dot product.

/// Cosine similarity at or above which two messages ask the same thing (e5 query embeddings
/// of Japanese paraphrases sit around 0.9–0.95; different questions of the same domain
/// around 0.8–0.87, the retrieval threshold).
pub const SAME_QUESTION: f32 = 0.9;

/// A partition of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// Cluster of each point, `0..clusters.len()`; clusters are ordered largest first (ties:
    /// the one whose medoid comes first in the input).
    pub assignment: Vec<usize>,
    /// Each cluster's medoid (index into the input) and members (input order).
    pub clusters: Vec<Cluster>,
    /// The mean silhouette of the chosen k (before paraphrase merging); `None` when no k ≥ 2
    /// was tried.
    pub silhouette: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub medoid: usize,
    pub members: Vec<usize>,
}

/// Pairwise cosine distances (`1 − cos`, ≥ 0), row-major `n × n`.
pub struct Distances {
    n: usize,
    d: Vec<f32>,
}

impl Distances {
    pub fn new(vectors: &[Vec<f32>]) -> Self {
        let n = vectors.len();
        let mut d = vec![0.0f32; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let dot: f32 = vectors[i].iter().zip(&vectors[j]).map(|(a, b)| a * b).sum();
                let dist = (1.0 - dot).max(0.0);
                d[i * n + j] = dist;
                d[j * n + i] = dist;
            }
        }
        Self { n, d }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.d[i * self.n + j]
    }

    /// The member with the least total distance to the others (lowest index on ties).
    pub fn medoid(&self, members: &[usize]) -> usize {
        let mut best = (f32::INFINITY, members[0]);
        for &i in members {
            let total: f32 = members.iter().map(|&j| self.get(i, j)).sum();
            if total < best.0 {
                best = (total, i);
            }
        }
        best.1
    }
}

/// k-medoids (alternating assignment and medoid update) from a deterministic start: the most
/// central point, then repeatedly the point farthest from the medoids chosen so far. Returns
/// the medoids and each point's cluster (index into the medoids).
pub fn k_medoids(dist: &Distances, k: usize) -> (Vec<usize>, Vec<usize>) {
    let n = dist.len();
    assert!(k >= 1 && k <= n, "k = {k} for {n} points");
    let all: Vec<usize> = (0..n).collect();
    let mut medoids = vec![dist.medoid(&all)];
    while medoids.len() < k {
        let mut far = (-1.0f32, 0);
        for i in 0..n {
            if medoids.contains(&i) {
                continue;
            }
            let nearest = medoids
                .iter()
                .map(|&m| dist.get(i, m))
                .fold(f32::INFINITY, f32::min);
            if nearest > far.0 {
                far = (nearest, i);
            }
        }
        medoids.push(far.1);
    }
    let mut assignment = assign(dist, &medoids);
    for _ in 0..100 {
        let mut changed = false;
        for (c, medoid) in medoids.iter_mut().enumerate() {
            let members: Vec<usize> = (0..n).filter(|&i| assignment[i] == c).collect();
            if members.is_empty() {
                continue;
            }
            let better = dist.medoid(&members);
            if better != *medoid {
                *medoid = better;
                changed = true;
            }
        }
        let next = assign(dist, &medoids);
        if !changed && next == assignment {
            break;
        }
        assignment = next;
    }
    (medoids, assignment)
}

/// Each point's nearest medoid (the first on ties; a medoid is its own).
fn assign(dist: &Distances, medoids: &[usize]) -> Vec<usize> {
    (0..dist.len())
        .map(|i| {
            if let Some(c) = medoids.iter().position(|&m| m == i) {
                return c;
            }
            let mut best = (f32::INFINITY, 0);
            for (c, &m) in medoids.iter().enumerate() {
                let d = dist.get(i, m);
                if d < best.0 {
                    best = (d, c);
                }
            }
            best.1
        })
        .collect()
}

/// The mean silhouette of a partition into `k` clusters (a point alone in its cluster
/// scores 0).
pub fn silhouette(dist: &Distances, assignment: &[usize], k: usize) -> f32 {
    let n = dist.len();
    let mut sizes = vec![0usize; k];
    for &c in assignment {
        sizes[c] += 1;
    }
    let mut total = 0.0f32;
    let mut sums = vec![0.0f32; k];
    for i in 0..n {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for j in 0..n {
            sums[assignment[j]] += dist.get(i, j);
        }
        let own = assignment[i];
        if sizes[own] <= 1 {
            continue;
        }
        let a = sums[own] / (sizes[own] - 1) as f32;
        let b = (0..k)
            .filter(|&c| c != own && sizes[c] > 0)
            .map(|c| sums[c] / sizes[c] as f32)
            .fold(f32::INFINITY, f32::min);
        if b.is_finite() {
            let m = a.max(b);
            if m > 0.0 {
                total += (b - a) / m;
            }
        }
    }
    total / n as f32
}

/// Topics: k-medoids for every k in `2..=max_k` (bounded by the points), keeping the k with
/// the best mean silhouette (the smaller k on ties); then clusters whose medoids are
/// paraphrases of each other ([`SAME_QUESTION`]) are merged, so a period where everyone
/// asked one thing gives one topic.
pub fn topics(dist: &Distances, max_k: usize) -> Clustering {
    let n = dist.len();
    if n == 0 {
        return Clustering {
            assignment: Vec::new(),
            clusters: Vec::new(),
            silhouette: None,
        };
    }
    let mut best: Option<(f32, Vec<usize>, Vec<usize>)> = None;
    for k in 2..=max_k.min(n.saturating_sub(1)) {
        let (medoids, assignment) = k_medoids(dist, k);
        let s = silhouette(dist, &assignment, k);
        if best.as_ref().is_none_or(|(b, _, _)| s > *b + 1e-6) {
            best = Some((s, medoids, assignment));
        }
    }
    let (score, medoids, assignment) = match best {
        Some((s, m, a)) => (Some(s), m, a),
        // One or two points: each its own topic, merged below when they say the same.
        None => (None, (0..n).collect(), (0..n).collect()),
    };
    let groups: Vec<Vec<usize>> = (0..medoids.len())
        .map(|c| (0..n).filter(|&i| assignment[i] == c).collect())
        .filter(|g: &Vec<usize>| !g.is_empty())
        .collect();
    let mut clustering = merge_paraphrases(dist, groups);
    clustering.silhouette = score;
    clustering
}

/// Groups messages that ask the same thing: each message joins the first group whose
/// first message it paraphrases ([`SAME_QUESTION`]), else starts one (leader clustering,
/// in input order, so the result is deterministic).
pub fn paraphrase_groups(dist: &Distances) -> Clustering {
    let mut leaders: Vec<usize> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..dist.len() {
        match leaders
            .iter()
            .position(|&l| 1.0 - dist.get(i, l) >= SAME_QUESTION)
        {
            Some(g) => groups[g].push(i),
            None => {
                leaders.push(i);
                groups.push(vec![i]);
            }
        }
    }
    finish(dist, groups)
}

/// Merges groups whose medoids are paraphrases, until none are.
fn merge_paraphrases(dist: &Distances, mut groups: Vec<Vec<usize>>) -> Clustering {
    loop {
        let medoids: Vec<usize> = groups.iter().map(|g| dist.medoid(g)).collect();
        let pair = (0..groups.len()).find_map(|a| {
            (a + 1..groups.len())
                .find(|&b| 1.0 - dist.get(medoids[a], medoids[b]) >= SAME_QUESTION)
                .map(|b| (a, b))
        });
        match pair {
            Some((a, b)) => {
                let moved = groups.remove(b);
                groups[a].extend(moved);
                groups[a].sort_unstable();
            }
            None => return finish(dist, groups),
        }
    }
}

/// Orders groups largest first and computes their medoids.
fn finish(dist: &Distances, groups: Vec<Vec<usize>>) -> Clustering {
    let mut clusters: Vec<Cluster> = groups
        .into_iter()
        .map(|members| Cluster {
            medoid: dist.medoid(&members),
            members,
        })
        .collect();
    clusters.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then(a.medoid.cmp(&b.medoid))
    });
    let mut assignment = vec![0; dist.len()];
    for (c, cluster) in clusters.iter().enumerate() {
        for &i in &cluster.members {
            assignment[i] = c;
        }
    }
    Clustering {
        assignment,
        clusters,
        silhouette: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit vector near axis `axis` of `dim`, nudged by `noise` along another axis.
    fn near(axis: usize, other: usize, noise: f32, dim: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[axis] = 1.0;
        v[other] += noise;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    /// Three well-separated groups of different sizes, interleaved.
    fn three_topics() -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut vectors = Vec::new();
        let mut truth = Vec::new();
        for i in 0..12 {
            let (axis, t) = match i % 4 {
                0 | 1 => (0, 0),
                2 => (3, 1),
                _ => (6, 2),
            };
            // Each group spreads over its own two side axes, so no two points coincide.
            let side = axis + 1 + (i % 2);
            vectors.push(near(axis, side, 0.1 + 0.05 * (i as f32 / 12.0), 9));
            truth.push(t);
        }
        (vectors, truth)
    }

    #[test]
    fn separates_obviously_distinct_topics() {
        let (vectors, truth) = three_topics();
        let dist = Distances::new(&vectors);
        let result = topics(&dist, 8);
        assert_eq!(result.clusters.len(), 3, "{result:?}");
        // Same truth ⇔ same cluster.
        for i in 0..vectors.len() {
            for j in 0..vectors.len() {
                assert_eq!(
                    truth[i] == truth[j],
                    result.assignment[i] == result.assignment[j],
                    "points {i} and {j}: {result:?}"
                );
            }
        }
        // Largest first: the group of 6 (axis 0).
        assert_eq!(result.clusters[0].members.len(), 6);
        assert_eq!(truth[result.clusters[0].medoid], 0);
        assert!(result.silhouette.unwrap() > 0.5, "{:?}", result.silhouette);
    }

    #[test]
    fn is_deterministic_and_independent_of_runs() {
        let (vectors, _) = three_topics();
        let dist = Distances::new(&vectors);
        let first = topics(&dist, 8);
        for _ in 0..5 {
            assert_eq!(topics(&dist, 8), first);
        }
    }

    #[test]
    fn one_subject_is_one_topic() {
        // Everyone asked the same thing (cosines ≥ 0.99): no split into k ≥ 2 survives.
        let vectors: Vec<Vec<f32>> = (0..6).map(|i| near(0, 1 + i % 3, 0.05, 4)).collect();
        let dist = Distances::new(&vectors);
        let result = topics(&dist, 8);
        assert_eq!(result.clusters.len(), 1, "{result:?}");
        assert_eq!(result.clusters[0].members, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn medoid_is_the_central_member() {
        let vectors = vec![near(0, 1, 0.3, 3), near(0, 1, 0.0, 3), near(0, 2, 0.3, 3)];
        let dist = Distances::new(&vectors);
        assert_eq!(dist.medoid(&[0, 1, 2]), 1);
    }

    #[test]
    fn paraphrases_group_and_different_questions_do_not() {
        let vectors = vec![
            near(0, 1, 0.1, 4),
            near(2, 3, 0.1, 4),
            near(0, 1, 0.2, 4),
            near(0, 3, 0.1, 4),
        ];
        let dist = Distances::new(&vectors);
        let groups = paraphrase_groups(&dist);
        assert_eq!(groups.clusters.len(), 2, "{groups:?}");
        assert_eq!(groups.clusters[0].members, vec![0, 2, 3]);
        assert_eq!(groups.clusters[1].members, vec![1]);
    }

    #[test]
    fn tiny_inputs() {
        assert!(topics(&Distances::new(&[]), 8).clusters.is_empty());
        let one = topics(&Distances::new(&[near(0, 1, 0.1, 2)]), 8);
        assert_eq!(one.clusters.len(), 1);
        let two = topics(
            &Distances::new(&[near(0, 1, 0.0, 2), near(1, 0, 0.0, 2)]),
            8,
        );
        assert_eq!(two.clusters.len(), 2);
    }
}
