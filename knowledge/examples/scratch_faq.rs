// Temporary experiment (to be deleted): FAQ embedding variants.
use kizuna_knowledge::chunk::chunk_document;
use kizuna_knowledge::document::load_dir;
use kizuna_knowledge::evaluate::load_eval_set;
use kizuna_knowledge::{DocumentKind, Embedder};
use std::path::Path;

fn dot(a: &[f32], b: &[f32]) -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() }

fn main() {
    let m = kizuna_knowledge::embed::E5Model::load("models/e5-small-q4.bin").unwrap();
    let docs = load_dir(Path::new("knowledge/content")).unwrap().documents;
    let set = load_eval_set(Path::new("evals/retrieval")).unwrap();
    let docs: Vec<_> = docs.into_iter().filter(|d| d.kind != DocumentKind::Template).collect();
    // per doc: list of vectors per variant
    let mut qa = Vec::new(); let mut qq = Vec::new(); let mut qp = Vec::new(); let mut ap = Vec::new();
    for d in &docs {
        let chunks = chunk_document(d, 700);
        let texts: Vec<&str> = chunks.iter().map(|c| c.embed_text.as_str()).collect();
        let v = m.embed_passages(&texts).unwrap();
        qa.push(v);
        if d.kind == DocumentKind::Faq {
            qq.push(vec![m.embed_queries(&[&d.title]).unwrap().remove(0)]);
            qp.push(vec![m.embed_passages(&[&d.title]).unwrap().remove(0)]);
            ap.push(vec![m.embed_passages(&[&d.text]).unwrap().remove(0)]);
        } else {
            let head = format!("{}\n{}", d.title, d.tags.join(" "));
            qq.push(vec![]); qp.push(vec![m.embed_passages(&[&head]).unwrap().remove(0)]); ap.push(vec![]);
        }
    }
    let on: Vec<_> = set.iter().filter(|q| !q.expected.is_empty()).collect();
    let qv: Vec<Vec<f32>> = on.iter().map(|q| m.embed_queries(&[&q.q]).unwrap().remove(0)).collect();
    let variants: Vec<(&str, Box<dyn Fn(usize, &[f32]) -> f32>)> = vec![
        ("qa", Box::new(|i, q: &[f32]| qa[i].iter().map(|v| dot(q, v)).fold(-1.0, f32::max))),
        ("qq", Box::new(|i, q: &[f32]| qa[i].iter().chain(qq[i].iter()).map(|v| dot(q, v)).fold(-1.0, f32::max))),
        ("qp", Box::new(|i, q: &[f32]| qa[i].iter().chain(qp[i].iter()).map(|v| dot(q, v)).fold(-1.0, f32::max))),
        ("avg qa,qp", Box::new(|i, q: &[f32]| { let a = qa[i].iter().map(|v| dot(q, v)).fold(-1.0, f32::max); match qp[i].first() { Some(v) => (a + dot(q, v)) / 2.0, None => a } })),
        ("qa+qp+qq", Box::new(|i, q: &[f32]| qa[i].iter().chain(qp[i].iter()).chain(qq[i].iter()).map(|v| dot(q, v)).fold(-1.0, f32::max))),
        ("norm(qa+qp)", Box::new(|i, q: &[f32]| qa[i].iter().map(|v| { match qp[i].first() { Some(h) => { let sum: Vec<f32> = v.iter().zip(h).map(|(a, b)| a + b).collect(); let n = dot(&sum, &sum).sqrt(); dot(q, &sum) / n } None => dot(q, v) } }).fold(-1.0, f32::max))),
        ("norm faq only", Box::new(|i, q: &[f32]| qa[i].iter().map(|v| { match (qp[i].first(), qq[i].is_empty()) { (Some(h), false) => { let sum: Vec<f32> = v.iter().zip(h).map(|(a, b)| a + b).collect(); let n = dot(&sum, &sum).sqrt(); dot(q, &sum) / n } _ => dot(q, v) } }).fold(-1.0, f32::max))),
        ("qa+ap", Box::new(|i, q: &[f32]| qa[i].iter().chain(ap[i].iter()).map(|v| dot(q, v)).fold(-1.0, f32::max))),
        ("qa+qq+ap", Box::new(|i, q: &[f32]| qa[i].iter().chain(qq[i].iter()).chain(ap[i].iter()).map(|v| dot(q, v)).fold(-1.0, f32::max))),
        ("avg qa,qq", Box::new(|i, q: &[f32]| { let a = qa[i].iter().map(|v| dot(q, v)).fold(-1.0, f32::max); match qq[i].first() { Some(v) => (a + dot(q, v)) / 2.0, None => a } })),
    ];
    for (name, score) in &variants {
        let (mut r1, mut r5, mut mrr) = (0, 0, 0.0);
        for (qi, q) in on.iter().enumerate() {
            let mut s: Vec<(f32, &str)> = docs.iter().enumerate().map(|(i, d)| (score(i, &qv[qi]), d.id.as_str())).collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            let r = s.iter().position(|(_, id)| q.expected.iter().any(|e| e == id));
            if r == Some(0) { r1 += 1 } if r.is_some_and(|r| r < 5) { r5 += 1 } if let Some(r) = r { mrr += 1.0 / (r as f32 + 1.0) }
        }
        let n = on.len() as f32;
        println!("{name:10} r@1 {:.3} r@5 {:.3} mrr {:.3}", r1 as f32 / n, r5 as f32 / n, mrr / n);
    }
}
