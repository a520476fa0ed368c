import Foundation

/// The log summed up in time buckets, for the run report (`edgeq report`): every figure is an
/// SQL aggregate (`GROUP BY` over buckets, modes and actors), so a log of millions of rows comes
/// back as a few hundred cells and no row leaves SQLite.
public struct LogAggregates: Sendable, Equatable {
    /// Rows in the log.
    public var rows: Int
    /// Time of the first and the last row (Unix seconds); nil when the log is empty.
    public var firstTime: Double?
    /// Time of the last row.
    public var lastTime: Double?
    /// Start of bucket 0 (the first row's time).
    public var bucketStart: Double
    /// Width of one bucket, seconds.
    public var bucketSeconds: Double
    /// Buckets asked for; bucket indices are 0 ..< bucketCount (the last row falls in the last).
    public var bucketCount: Int

    /// One bucket × mode × actor.
    public struct Cell: Sendable, Equatable {
        /// Bucket index.
        public var bucket: Int
        /// `shadow` or `control`.
        public var mode: String
        /// `model`, `incumbent`, `exploration` or `fallback`.
        public var actor: String
        /// Rows.
        public var rows: Int
        /// Sum of `reward`.
        public var rewardSum: Double
        /// Rows whose incumbent action and model action are both known (shadow agreement's denominator).
        public var compared: Int
        /// Of `compared`, rows where they are equal.
        public var agreed: Int
        /// Rows with no Q-values (the model was not run).
        public var noQValues: Int
        /// Rows with no model version (no model loaded).
        public var noModel: Int
        /// Rows flagged `gap`.
        public var gaps: Int
    }

    /// Every non-empty cell, ordered by bucket, mode, actor.
    public var cells: [Cell]

    /// One batch of consecutive rows (by row id) × mode × actor: the batches the run report's
    /// per-tick interval is computed on. Batches follow the rows, not the clock, so a run whose
    /// wall time was mostly waiting (a retraining, a stopped plant) still has many of them.
    public struct Batch: Sendable, Equatable {
        /// Batch index, 0 ..< bucketCount, in row order.
        public var batch: Int
        /// `shadow` or `control`.
        public var mode: String
        /// `model`, `incumbent`, `exploration` or `fallback`.
        public var actor: String
        /// Rows.
        public var rows: Int
        /// Sum of `reward`.
        public var rewardSum: Double
    }

    /// Every non-empty batch cell, ordered by batch, mode, actor (as many batches as buckets).
    public var batches: [Batch]

    /// Audit rows by verb, result and reason.
    public struct AuditCount: Sendable, Equatable {
        /// The command's verb (`*` for a dropped batch).
        public var verb: String
        /// `accepted`, `refused` or `dropped`.
        public var result: String
        /// The refusal reason, if any.
        public var reason: String?
        /// Audit rows.
        public var count: Int
    }

    /// Audit rows grouped (empty when the table is absent).
    public var auditCounts: [AuditCount]

    /// Accepted control-plane commands that change what runs the plant (`mode`, `promote`,
    /// `rollback`, `retrain`), the newest `auditLimit`, oldest first.
    public var auditEvents: [AuditRecord]
}

extension ExperienceLog {
    /// Sums the log up in `buckets` equal time buckets from the first row to the last.
    ///
    /// Two scans of `transitions` (a `GROUP BY` on time bucket, mode and actor, and one on
    /// row batch, mode and actor), plus two small queries on `audit`. Cost measured in docs/operations.md ("The run report").
    ///
    /// - Parameters:
    ///   - buckets: time buckets (at least 1).
    ///   - auditLimit: at most this many accepted commands are returned in `auditEvents`.
    /// - Throws: `LogError` `.badArgument` for `buckets` < 1, `.query` when SQLite fails.
    public func aggregates(buckets: Int = 120, auditLimit: Int = 500) throws(LogError) -> LogAggregates {
        guard buckets >= 1 else { throw LogError(.badArgument, path: path, message: "buckets must be at least 1, got \(buckets)") }
        return try withReader { db throws(LogError) -> LogAggregates in
            let range = try db.prepare("SELECT count(*), min(time), max(time) FROM transitions")
            _ = try range.step()
            let rows = Int(range.int64(0))
            let first = range.isNull(1) ? nil : range.double(1)
            let last = range.isNull(2) ? nil : range.double(2)
            let start = first ?? 0
            let span = max((last ?? start) - start, 0)
            // A bucket wide enough that the last row's index is buckets (clamped to buckets − 1).
            let width = span > 0 ? span / Double(buckets) : 1
            var cells: [LogAggregates.Cell] = []
            if rows > 0 {
                let s = try db.prepare("""
                    SELECT min(CAST((time - ?1) / ?2 AS INTEGER), ?3) AS b, mode, actor, count(*), total(reward),
                           sum(action IS NOT NULL AND model_action IS NOT NULL), sum(action = model_action),
                           sum(q_values IS NULL), sum(model_version IS NULL), sum((flags & 1) != 0)
                    FROM transitions GROUP BY b, mode, actor ORDER BY b, mode, actor
                    """)
                s.bind(1, start)
                s.bind(2, width)
                s.bind(3, Int64(buckets - 1))
                while try s.step() {
                    cells.append(LogAggregates.Cell(
                        bucket: Int(max(0, s.int64(0))), mode: s.text(1), actor: s.text(2), rows: Int(s.int64(3)),
                        rewardSum: s.double(4), compared: Int(s.int64(5)), agreed: Int(s.int64(6)),
                        noQValues: Int(s.int64(7)), noModel: Int(s.int64(8)), gaps: Int(s.int64(9))))
                }
            }
            var batches: [LogAggregates.Batch] = []
            if rows > 0 {
                // Equal ranges of row ids (ids only grow; a retention gap only thins a batch).
                let s = try db.prepare("""
                    SELECT min((id - (SELECT min(id) FROM transitions)) * ?1
                               / ((SELECT max(id) FROM transitions) - (SELECT min(id) FROM transitions) + 1), ?1 - 1) AS b,
                           mode, actor, count(*), total(reward)
                    FROM transitions GROUP BY b, mode, actor ORDER BY b, mode, actor
                    """)
                s.bind(1, Int64(buckets))
                while try s.step() {
                    batches.append(LogAggregates.Batch(batch: Int(max(0, s.int64(0))), mode: s.text(1), actor: s.text(2),
                                                       rows: Int(s.int64(3)), rewardSum: s.double(4)))
                }
            }
            var counts: [LogAggregates.AuditCount] = []
            var events: [AuditRecord] = []
            let hasAudit = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit'") ?? 0
            if hasAudit > 0 {
                let c = try db.prepare("SELECT verb, result, reason, count(*) FROM audit GROUP BY verb, result, reason ORDER BY verb, result, reason")
                while try c.step() {
                    counts.append(LogAggregates.AuditCount(verb: c.text(0), result: c.text(1), reason: c.isNull(2) ? nil : c.text(2),
                                                           count: Int(c.int64(3))))
                }
                let e = try db.prepare("""
                    SELECT * FROM (SELECT id, \(Self.auditColumns) FROM audit
                                   WHERE result = 'accepted' AND verb IN ('mode','promote','rollback','retrain')
                                   ORDER BY id DESC LIMIT ?1) ORDER BY id
                    """)
                e.bind(1, Int64(max(0, auditLimit)))
                while try e.step() { events.append(Self.readAudit(e).record) }
            }
            return LogAggregates(rows: rows, firstTime: first, lastTime: last, bucketStart: start, bucketSeconds: width,
                                 bucketCount: buckets, cells: cells, batches: batches, auditCounts: counts, auditEvents: events)
        }
    }
}

/// A run of consecutive log rows with one controller in charge (the run report's view of a
/// switchback trial's blocks: adjacent blocks of one arm make one run).
public struct ArmRun: Sendable, Equatable {
    /// `vN` (mode control, the model version that decided) or `incumbent` (mode shadow).
    public var arm: String
    /// Rows in the run.
    public var rows: Int
    /// Sum of their rewards.
    public var rewardSum: Double
    /// Time of its first and last row (Unix seconds).
    public var firstTime: Double
    /// Time of its last row.
    public var lastTime: Double
}

extension ExperienceLog {
    /// The runs of one controller in the stretch of the log from the first to the last row that
    /// model version `candidate` decided in control mode between `from` and `to` (Unix seconds;
    /// nil `from`: the log's start), in order, at most `limit`. Every row in that stretch belongs
    /// to the candidate's trial when `to` is the trial's verdict time (the candidate decides in
    /// control mode only in its trial until it is promoted, which is after the verdict). Computed
    /// in SQL (the time index bounds the scan, window functions cut the runs): no row leaves SQLite.
    ///
    /// - Throws: `LogError` `.query`.
    public func armRuns(candidate: String, from: Double?, to: Double, limit: Int = 2_000) throws(LogError) -> [ArmRun] {
        guard to.isFinite else { return [] }
        return try withReader { db throws(LogError) -> [ArmRun] in
            let s = try db.prepare("""
                WITH b AS (SELECT min(id) AS f, max(id) AS l FROM transitions
                           WHERE time >= ?1 AND time <= ?2 AND mode = 'control' AND model_version = ?3),
                w AS (SELECT id, time, reward,
                             CASE WHEN mode = 'control' THEN 'v' || coalesce(model_version, '?') ELSE 'incumbent' END AS arm
                      FROM transitions, b WHERE id BETWEEN b.f AND b.l),
                c AS (SELECT *, CASE WHEN arm IS LAG(arm) OVER (ORDER BY id) THEN 0 ELSE 1 END AS first FROM w),
                r AS (SELECT *, SUM(first) OVER (ORDER BY id) AS run FROM c)
                SELECT run, arm, count(*), total(reward), min(time), max(time) FROM r GROUP BY run ORDER BY run LIMIT ?4
                """)
            s.bind(1, from.flatMap { $0.isFinite ? $0 : nil } ?? -Double.greatestFiniteMagnitude)
            s.bind(2, to)
            s.bind(3, candidate)
            s.bind(4, Int64(max(0, limit)))
            var out: [ArmRun] = []
            while try s.step() {
                out.append(ArmRun(arm: s.text(1), rows: Int(s.int64(2)), rewardSum: s.double(3), firstTime: s.double(4), lastTime: s.double(5)))
            }
            return out
        }
    }
}
