//! The job graph from `needs:`. GitHub starts a job as soon as *its own* needs have finished
//! (there are no stages: a slow job in one branch does not hold back another branch), so the
//! scheduler-facing API is [`DagState`]: ask what is ready, report what finished, get what
//! became ready. [`Dag::stages`] layers the graph only for display (`ignis list`'s stage
//! column, like `act -l`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// A job's position in its [`Dag`] (declaration order).
pub type JobIndex = usize;

/// Why `needs:` does not form a DAG. User errors in the workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// Two jobs with the same id.
    #[error("duplicate job id '{job}'")]
    DuplicateJob {
        /// The repeated id.
        job: String,
    },
    /// `needs:` names a job that does not exist.
    #[error("job '{job}' needs unknown job '{needed}'")]
    UnknownNeed {
        /// The job with the bad `needs:`.
        job: String,
        /// The missing job id.
        needed: String,
    },
    /// The needs form a cycle; `cycle` lists it in order, first job repeated at the end.
    #[error("jobs depend on each other in a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The jobs on the cycle.
        cycle: Vec<String>,
    },
}

/// The dependency graph of a workflow's jobs.
#[derive(Debug, Clone)]
pub struct Dag {
    ids: Vec<String>,
    index: HashMap<String, JobIndex>,
    needs: Vec<Vec<JobIndex>>,
    dependents: Vec<Vec<JobIndex>>,
}

impl Dag {
    /// Builds the graph from `(job id, needs)` pairs in declaration order. Refuses duplicate
    /// ids, unknown needs and cycles. A job listing the same need twice counts it once.
    pub fn new<I, S, N>(jobs: I) -> Result<Self, DagError>
    where
        I: IntoIterator<Item = (S, N)>,
        S: Into<String>,
        N: IntoIterator,
        N::Item: AsRef<str>,
    {
        let mut ids = Vec::new();
        let mut raw_needs = Vec::new();
        let mut index = HashMap::new();
        for (id, needs) in jobs {
            let id = id.into();
            if index.insert(id.clone(), ids.len()).is_some() {
                return Err(DagError::DuplicateJob { job: id });
            }
            ids.push(id);
            raw_needs.push(
                needs
                    .into_iter()
                    .map(|n| n.as_ref().to_owned())
                    .collect::<Vec<_>>(),
            );
        }
        let mut needs = vec![Vec::new(); ids.len()];
        let mut dependents = vec![Vec::new(); ids.len()];
        for (job, names) in raw_needs.iter().enumerate() {
            for name in names {
                let Some(&need) = index.get(name) else {
                    return Err(DagError::UnknownNeed {
                        job: ids[job].clone(),
                        needed: name.clone(),
                    });
                };
                if !needs[job].contains(&need) {
                    needs[job].push(need);
                    dependents[need].push(job);
                }
            }
        }
        let dag = Self {
            ids,
            index,
            needs,
            dependents,
        };
        if let Some(cycle) = dag.find_cycle() {
            return Err(DagError::Cycle { cycle });
        }
        Ok(dag)
    }

    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no jobs.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of a job.
    pub fn id(&self, job: JobIndex) -> &str {
        &self.ids[job]
    }

    /// All ids in declaration order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The index of a job id.
    pub fn index_of(&self, id: &str) -> Option<JobIndex> {
        self.index.get(id).copied()
    }

    /// The jobs `job` needs directly, in `needs:` order.
    pub fn needs(&self, job: JobIndex) -> &[JobIndex] {
        &self.needs[job]
    }

    /// The jobs that need `job` directly.
    pub fn dependents(&self, job: JobIndex) -> &[JobIndex] {
        &self.dependents[job]
    }

    /// Every job that `job` needs directly or transitively (the `needs` of the `needs`),
    /// in declaration order. `-j job` runs these too.
    pub fn ancestors(&self, job: JobIndex) -> Vec<JobIndex> {
        let mut seen = vec![false; self.len()];
        let mut stack = self.needs[job].clone();
        while let Some(j) = stack.pop() {
            if !seen[j] {
                seen[j] = true;
                stack.extend_from_slice(&self.needs[j]);
            }
        }
        (0..self.len()).filter(|&j| seen[j]).collect()
    }

    /// Jobs not in `finished` whose needs are all in `finished`, in declaration order.
    pub fn ready(&self, finished: &[bool]) -> Vec<JobIndex> {
        (0..self.len())
            .filter(|&j| !finished.get(j).copied().unwrap_or(false))
            .filter(|&j| {
                self.needs[j]
                    .iter()
                    .all(|&n| finished.get(n).copied().unwrap_or(false))
            })
            .collect()
    }

    /// Display layers: stage 0 holds jobs without needs, stage n jobs whose longest chain of
    /// needs has length n. Only for showing; scheduling uses [`DagState`].
    pub fn stages(&self) -> Vec<Vec<JobIndex>> {
        let mut depth = vec![0usize; self.len()];
        for job in self.topological_order() {
            depth[job] = self.needs[job]
                .iter()
                .map(|&n| depth[n] + 1)
                .max()
                .unwrap_or(0);
        }
        let mut stages: Vec<Vec<JobIndex>> = Vec::new();
        for (job, &d) in depth.iter().enumerate() {
            if stages.len() <= d {
                stages.resize(d + 1, Vec::new());
            }
            stages[d].push(job);
        }
        stages
    }

    /// The stage of every job (see [`Dag::stages`]).
    pub fn stage_of(&self) -> Vec<usize> {
        let mut out = vec![0; self.len()];
        for (stage, jobs) in self.stages().iter().enumerate() {
            for &j in jobs {
                out[j] = stage;
            }
        }
        out
    }

    /// Jobs ordered so that every job comes after its needs (declaration order among equals).
    pub fn topological_order(&self) -> Vec<JobIndex> {
        let mut remaining: Vec<usize> = self.needs.iter().map(Vec::len).collect();
        let mut order = Vec::with_capacity(self.len());
        // Kahn's algorithm, always taking the lowest ready index (declaration order).
        let mut ready: BinaryHeap<Reverse<JobIndex>> = (0..self.len())
            .filter(|&j| remaining[j] == 0)
            .map(Reverse)
            .collect();
        while let Some(Reverse(next)) = ready.pop() {
            order.push(next);
            for &d in &self.dependents[next] {
                remaining[d] -= 1;
                if remaining[d] == 0 {
                    ready.push(Reverse(d));
                }
            }
        }
        order
    }

    /// A fresh scheduling state: nothing started, nothing finished.
    pub fn state(&self) -> DagState<'_> {
        DagState::new(self)
    }

    fn find_cycle(&self) -> Option<Vec<String>> {
        // Iterative DFS with colours: 0 unvisited, 1 on the stack, 2 done.
        let mut colour = vec![0u8; self.len()];
        for root in 0..self.len() {
            if colour[root] != 0 {
                continue;
            }
            let mut stack: Vec<(JobIndex, usize)> = vec![(root, 0)];
            colour[root] = 1;
            while let Some(&mut (job, ref mut next)) = stack.last_mut() {
                if let Some(&need) = self.needs[job].get(*next) {
                    *next += 1;
                    match colour[need] {
                        0 => {
                            colour[need] = 1;
                            stack.push((need, 0));
                        }
                        1 => {
                            let start = stack.iter().position(|&(j, _)| j == need).unwrap_or(0);
                            let mut cycle: Vec<String> = stack[start..]
                                .iter()
                                .map(|&(j, _)| self.ids[j].clone())
                                .collect();
                            cycle.push(self.ids[need].clone());
                            return Some(cycle);
                        }
                        _ => {}
                    }
                } else {
                    colour[job] = 2;
                    stack.pop();
                }
            }
        }
        None
    }
}

/// Scheduling state over a [`Dag`]: which jobs finished, which are ready.
#[derive(Debug, Clone)]
pub struct DagState<'a> {
    dag: &'a Dag,
    waiting_on: Vec<usize>,
    finished: Vec<bool>,
    handed_out: Vec<bool>,
}

impl<'a> DagState<'a> {
    fn new(dag: &'a Dag) -> Self {
        Self {
            dag,
            waiting_on: dag.needs.iter().map(Vec::len).collect(),
            finished: vec![false; dag.len()],
            handed_out: vec![false; dag.len()],
        }
    }

    /// The graph this state schedules.
    pub fn dag(&self) -> &'a Dag {
        self.dag
    }

    /// Jobs ready to start that were not handed out before (initially: jobs without needs).
    /// Each job is handed out once, by this or by [`DagState::complete`].
    pub fn take_ready(&mut self) -> Vec<JobIndex> {
        let ready: Vec<JobIndex> = (0..self.dag.len())
            .filter(|&j| !self.handed_out[j] && self.waiting_on[j] == 0)
            .collect();
        for &j in &ready {
            self.handed_out[j] = true;
        }
        ready
    }

    /// Marks `job` finished (whatever its result: a dependent whose need failed still
    /// becomes *ready*, and its `if:` decides whether it is skipped) and returns the jobs
    /// that became ready because of it. Completing a job twice is a no-op.
    pub fn complete(&mut self, job: JobIndex) -> Vec<JobIndex> {
        if job >= self.dag.len() || self.finished[job] {
            return Vec::new();
        }
        self.finished[job] = true;
        self.handed_out[job] = true;
        let mut newly = Vec::new();
        for &d in &self.dag.dependents[job] {
            self.waiting_on[d] -= 1;
            if self.waiting_on[d] == 0 && !self.handed_out[d] {
                self.handed_out[d] = true;
                newly.push(d);
            }
        }
        newly
    }

    /// Whether `job` has finished.
    pub fn is_finished(&self, job: JobIndex) -> bool {
        self.finished.get(job).copied().unwrap_or(false)
    }

    /// Whether every job has finished.
    pub fn all_finished(&self) -> bool {
        self.finished.iter().all(|&f| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(jobs: &[(&str, &[&str])]) -> Result<Dag, DagError> {
        Dag::new(jobs.iter().map(|(id, needs)| (*id, needs.iter().copied())))
    }

    fn names(d: &Dag, jobs: &[JobIndex]) -> Vec<String> {
        jobs.iter().map(|&j| d.id(j).to_owned()).collect()
    }

    #[test]
    fn a_job_is_ready_when_its_own_needs_finish() {
        // a -> c; b (slow) -> d. d must not wait for a or c; c must not wait for b.
        let d = dag(&[("a", &[]), ("b", &[]), ("c", &["a"]), ("d", &["b"])]).expect("dag");
        let mut s = d.state();
        assert_eq!(names(&d, &s.take_ready()), ["a", "b"]);
        assert!(s.take_ready().is_empty(), "handed out once");
        assert_eq!(names(&d, &s.complete(0)), ["c"]);
        assert_eq!(names(&d, &s.complete(2)), Vec::<String>::new());
        assert!(!s.all_finished());
        assert_eq!(names(&d, &s.complete(1)), ["d"]);
        assert!(s.complete(1).is_empty(), "idempotent");
        s.complete(3);
        assert!(s.all_finished());
        // Stages exist only for display: a, b | c, d.
        assert_eq!(d.stages(), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn diamond_waits_for_both() {
        let d = dag(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("e", &["b", "c"])]).expect("dag");
        let mut s = d.state();
        assert_eq!(s.take_ready(), [0]);
        assert_eq!(s.complete(0), [1, 2]);
        assert!(s.complete(1).is_empty());
        assert_eq!(s.complete(2), [3]);
        assert_eq!(d.ready(&[true, true, false, false]), [2]);
        assert_eq!(d.ancestors(3), [0, 1, 2]);
        assert_eq!(d.stage_of(), [0, 1, 1, 2]);
    }

    #[test]
    fn stages_use_the_longest_chain_and_topological_order_respects_needs() {
        // Declared out of order: z needs y needs x.
        let d = dag(&[("z", &["y"]), ("x", &[]), ("y", &["x", "x"])]).expect("dag");
        assert_eq!(d.needs(2), [1], "duplicate need counted once");
        assert_eq!(names(&d, &d.topological_order()), ["x", "y", "z"]);
        assert_eq!(d.stage_of(), [2, 0, 1]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            dag(&[("a", &["nope"])]).unwrap_err(),
            DagError::UnknownNeed {
                job: "a".into(),
                needed: "nope".into()
            }
        );
        assert_eq!(
            dag(&[("a", &[]), ("a", &[])]).unwrap_err(),
            DagError::DuplicateJob { job: "a".into() }
        );
        let e = dag(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]).unwrap_err();
        assert_eq!(
            e,
            DagError::Cycle {
                cycle: vec!["a".into(), "c".into(), "b".into(), "a".into()]
            }
        );
        assert_eq!(
            e.to_string(),
            "jobs depend on each other in a cycle: a -> c -> b -> a"
        );
        assert!(matches!(dag(&[("s", &["s"])]), Err(DagError::Cycle { .. })));
    }

    #[test]
    fn long_chain_is_not_recursive() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("j{i}")).collect();
        let d = Dag::new(ids.iter().enumerate().map(|(i, id)| {
            let needs: Vec<&str> = if i == 0 {
                vec![]
            } else {
                vec![ids[i - 1].as_str()]
            };
            (id.clone(), needs)
        }))
        .expect("chain");
        assert_eq!(d.stages().len(), 20_000);
    }
}
