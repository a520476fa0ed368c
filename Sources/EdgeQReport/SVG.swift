import EdgeQLog
import Foundation

/// One line of a line chart: (time, value) points.
struct Series {
    var name: String
    var color: String
    var dashed: Bool
    var points: [(Double, Double)]
}

/// A marker on the timeline.
struct TimelineEvent {
    var time: Double
    var lane: String
    var label: String
    var color: String
}

// Inline SVG charts: fixed 1000 × H view box, scaled by the browser. Every drawn datum is an
// element (circle, rect, line) with a <title> tooltip; `data-points` counts them.

private let width = 1000.0
private let left = 64.0
private let right = 16.0

private func n(_ x: Double) -> String { String(format: "%.1f", x) }

/// Time axis ticks: 6 labels across [t0, t1].
private func timeAxis(_ t0: Double, _ t1: Double, y: Double, x: (Double) -> Double) -> String {
    let f = DateFormatter()
    f.locale = Locale(identifier: "en_US_POSIX")
    f.timeZone = TimeZone(identifier: "UTC")
    // Labels that differ from one another: dates over days, seconds over minutes, milliseconds below.
    f.dateFormat = t1 - t0 > 2 * 86_400 ? "MM-dd HH:mm" : (t1 - t0 > 60 ? "HH:mm:ss" : "HH:mm:ss.SSS")
    var s = "<line x1=\"\(n(left))\" y1=\"\(n(y))\" x2=\"\(n(width - right))\" y2=\"\(n(y))\" stroke=\"#adb5bd\"/>"
    for i in 0...5 {
        let t = t0 + (t1 - t0) * Double(i) / 5
        s += "<text x=\"\(n(x(t)))\" y=\"\(n(y + 16))\" font-size=\"11\" text-anchor=\"middle\" fill=\"#868e96\">\(f.string(from: Date(timeIntervalSince1970: t)))</text>"
    }
    return s
}

extension RunReport {
    /// The time range of the log (and the events), never empty.
    func timeRange(_ extra: [Double] = []) -> (Double, Double) {
        let all = [aggregates.firstTime, aggregates.lastTime].compactMap { $0 } + extra
        let lo = all.min() ?? 0, hi = all.max() ?? 1
        return hi > lo ? (lo, hi) : (lo - 1, lo + 1)
    }

    func lineChart(_ id: String, _ series: [Series], yLabel: String, yRange: (Double, Double)? = nil,
                   empty: String = "No rows in the log.") -> String {
        let count = series.reduce(0) { $0 + $1.points.count }
        guard count > 0 else { return "<figure class=\"plot\" data-plot=\"\(id)\" data-points=\"0\"><p class=\"empty\">\(esc(empty))</p></figure>" }
        let h = 260.0, top = 12.0, bottom = 28.0
        let (t0, t1) = timeRange()
        let values = series.flatMap { $0.points.map(\.1) }.filter(\.isFinite)
        var (y0, y1) = yRange ?? (values.min() ?? 0, values.max() ?? 1)
        if y1 <= y0 { y0 -= 1; y1 += 1 }
        if yRange == nil { let pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad }
        let x = { (t: Double) in left + (t - t0) / (t1 - t0) * (width - left - right) }
        let y = { (v: Double) in top + (1 - (v - y0) / (y1 - y0)) * (h - top - bottom) }
        var s = "<figure class=\"plot\" data-plot=\"\(id)\" data-points=\"\(count)\"><svg viewBox=\"0 0 \(n(width)) \(n(h))\" role=\"img\" aria-label=\"\(esc(yLabel))\">"
        for i in 0...4 {
            let v = y0 + (y1 - y0) * Double(i) / 4
            s += "<line x1=\"\(n(left))\" y1=\"\(n(y(v)))\" x2=\"\(n(width - right))\" y2=\"\(n(y(v)))\" stroke=\"#f1f3f5\"/>"
            s += "<text x=\"\(n(left - 6))\" y=\"\(n(y(v) + 4))\" font-size=\"11\" text-anchor=\"end\" fill=\"#868e96\">\(fmt(v))</text>"
        }
        s += "<text x=\"12\" y=\"\(n(top + (h - top - bottom) / 2))\" font-size=\"11\" fill=\"#868e96\" transform=\"rotate(-90 12 \(n(top + (h - top - bottom) / 2)))\" text-anchor=\"middle\">\(esc(yLabel))</text>"
        s += timeAxis(t0, t1, y: h - bottom, x: x)
        for se in series {
            // One line per run of adjacent buckets: a stretch with no rows (the gateway stopped, the
            // mode changed) is not drawn as if it had values.
            var runs: [[(Double, Double)]] = []
            for p in se.points {
                if let last = runs.last?.last, p.0 - last.0 <= 1.5 * aggregates.bucketSeconds {
                    runs[runs.count - 1].append(p)
                } else {
                    runs.append([p])
                }
            }
            for run in runs where run.count > 1 {
                let path = run.map { "\(n(x($0.0))),\(n(y($0.1)))" }.joined(separator: " ")
                s += "<polyline class=\"series\" fill=\"none\" stroke=\"\(se.color)\" stroke-width=\"1.6\"\(se.dashed ? " stroke-dasharray=\"5 3\"" : "") points=\"\(path)\"/>"
            }
            for p in se.points {
                s += "<circle cx=\"\(n(x(p.0)))\" cy=\"\(n(y(p.1)))\" r=\"2.2\" fill=\"\(se.color)\"><title>\(esc(se.name)): \(fmt(p.1))</title></circle>"
            }
        }
        s += "</svg><div class=\"legend\">"
        for se in series { s += "<span><i style=\"background:\(se.color)\"></i>\(esc(se.name))</span>" }
        return s + "</div></figure>"
    }

    func barChart(_ id: String, _ bars: [(String, Double)], yLabel: String) -> String {
        guard !bars.isEmpty else { return "<figure class=\"plot\" data-plot=\"\(id)\" data-points=\"0\"><p class=\"empty\">Nothing to show.</p></figure>" }
        let h = 230.0, top = 16.0, bottom = 54.0
        let maxV = max(bars.map(\.1).max() ?? 1, 1)
        let slot = (width - left - right) / Double(bars.count)
        let y = { (v: Double) in top + (1 - v / maxV) * (h - top - bottom) }
        var s = "<figure class=\"plot\" data-plot=\"\(id)\" data-points=\"\(bars.count)\"><svg viewBox=\"0 0 \(n(width)) \(n(h))\" role=\"img\" aria-label=\"\(esc(yLabel))\">"
        for i in 0...4 {
            let v = maxV * Double(i) / 4
            s += "<line x1=\"\(n(left))\" y1=\"\(n(y(v)))\" x2=\"\(n(width - right))\" y2=\"\(n(y(v)))\" stroke=\"#f1f3f5\"/>"
            s += "<text x=\"\(n(left - 6))\" y=\"\(n(y(v) + 4))\" font-size=\"11\" text-anchor=\"end\" fill=\"#868e96\">\(fmt(v))</text>"
        }
        for (i, (label, v)) in bars.enumerated() {
            let x0 = left + Double(i) * slot + slot * 0.15
            // A zero count still draws a hairline, so that the bar is there to see.
            let top = min(y(v), h - bottom - 1)
            s += "<rect class=\"bar\" x=\"\(n(x0))\" y=\"\(n(top))\" width=\"\(n(slot * 0.7))\" height=\"\(n(h - bottom - top))\" fill=\"#1971c2\"><title>\(esc(label)): \(fmt(v))</title></rect>"
            s += "<text x=\"\(n(x0 + slot * 0.35))\" y=\"\(n(top - 3))\" font-size=\"11\" text-anchor=\"middle\" fill=\"#212529\">\(fmt(v))</text>"
            // Many bars: the labels turn, so that they do not run into each other.
            let lx = x0 + slot * 0.35, ly = h - bottom + 14
            s += bars.count > 6
                ? "<text x=\"\(n(lx))\" y=\"\(n(ly))\" font-size=\"10\" text-anchor=\"end\" fill=\"#868e96\" transform=\"rotate(-25 \(n(lx)) \(n(ly)))\">\(esc(label))</text>"
                : "<text x=\"\(n(lx))\" y=\"\(n(ly))\" font-size=\"11\" text-anchor=\"middle\" fill=\"#868e96\">\(esc(label))</text>"
        }
        return s + "</svg></figure>"
    }

    func timeline(_ events: [TimelineEvent], lanes: [String]) -> String {
        guard !events.isEmpty else {
            return "<figure class=\"plot\" data-plot=\"timeline\" data-points=\"0\"><p class=\"empty\">No event on disk: no retraining report, trial, switch of the served model, quarantine or accepted command.</p></figure>"
        }
        let laneH = 26.0, top = 8.0
        let h = top + laneH * Double(lanes.count) + 28
        let (t0, t1) = timeRange(events.map(\.time))
        let x = { (t: Double) in left + 60 + (t - t0) / (t1 - t0) * (width - left - 60 - right) }
        var s = "<figure class=\"plot\" data-plot=\"timeline\" data-points=\"\(events.count)\"><svg viewBox=\"0 0 \(n(width)) \(n(h))\" role=\"img\" aria-label=\"timeline\">"
        for (i, lane) in lanes.enumerated() {
            let y = top + laneH * (Double(i) + 0.5)
            s += "<line x1=\"\(n(left + 60))\" y1=\"\(n(y))\" x2=\"\(n(width - right))\" y2=\"\(n(y))\" stroke=\"#f1f3f5\"/>"
            s += "<text x=\"\(n(left + 52))\" y=\"\(n(y + 4))\" font-size=\"12\" text-anchor=\"end\" fill=\"#495057\">\(esc(lane))</text>"
        }
        for e in events {
            let i = lanes.firstIndex(of: e.lane) ?? 0
            let y = top + laneH * (Double(i) + 0.5)
            s += "<circle class=\"event\" cx=\"\(n(x(e.time)))\" cy=\"\(n(y))\" r=\"6\" fill=\"\(e.color)\" fill-opacity=\"0.8\"><title>\(esc(RunReport.date(e.time))) UTC — \(esc(e.label))</title></circle>"
        }
        s += timeAxis(t0, t1, y: h - 26, x: x)
        return s + "</svg></figure>"
    }

    func intervalChart(_ trials: [RunHistory.Trial]) -> String {
        let shown = trials.filter { $0.ciLow != nil && $0.ciHigh != nil && $0.meanDifference != nil }
        guard !shown.isEmpty else {
            return "<figure class=\"plot\" data-plot=\"trials\" data-points=\"0\"><p class=\"empty\">No trial with an interval in the model store (models/vN/trial.json): none was decided, or none reached its minimum number of block pairs.</p></figure>"
        }
        let rowH = 30.0, top = 10.0
        let h = top + rowH * Double(shown.count) + 30
        let lo = min(shown.compactMap(\.ciLow).min() ?? 0, 0), hi = max(shown.compactMap(\.ciHigh).max() ?? 0, 0)
        let pad = max((hi - lo) * 0.08, 1e-9)
        let (v0, v1) = (lo - pad, hi + pad)
        let x = { (v: Double) in left + 90 + (v - v0) / (v1 - v0) * (width - left - 90 - right) }
        var s = "<figure class=\"plot\" data-plot=\"trials\" data-points=\"\(shown.count)\"><svg viewBox=\"0 0 \(n(width)) \(n(h))\" role=\"img\" aria-label=\"trial intervals\">"
        s += "<line x1=\"\(n(x(0)))\" y1=\"\(n(top))\" x2=\"\(n(x(0)))\" y2=\"\(n(h - 26))\" stroke=\"#adb5bd\" stroke-dasharray=\"4 3\"/>"
        for (i, t) in shown.enumerated() {
            guard let l = t.ciLow, let u = t.ciHigh, let d = t.meanDifference else { continue }
            let y = top + rowH * (Double(i) + 0.5)
            let color = l > 0 ? "#2b8a3e" : (u < 0 ? "#c92a2a" : "#e67700")
            s += "<text x=\"\(n(left + 82))\" y=\"\(n(y + 4))\" font-size=\"12\" text-anchor=\"end\" fill=\"#495057\">v\(t.version) vs \(esc(t.reference))</text>"
            s += "<line class=\"interval\" x1=\"\(n(x(l)))\" y1=\"\(n(y))\" x2=\"\(n(x(u)))\" y2=\"\(n(y))\" stroke=\"\(color)\" stroke-width=\"4\"><title>\(fmt(l)) … \(fmt(u))</title></line>"
            s += "<circle cx=\"\(n(x(d)))\" cy=\"\(n(y))\" r=\"5\" fill=\"\(color)\"><title>v\(t.version): \(fmt(d, sign: true)) per block over \(t.pairs) pairs, \(esc(t.verdict))</title></circle>"
        }
        for i in 0...4 {
            let v = v0 + (v1 - v0) * Double(i) / 4
            s += "<text x=\"\(n(x(v)))\" y=\"\(n(h - 10))\" font-size=\"11\" text-anchor=\"middle\" fill=\"#868e96\">\(fmt(v))</text>"
        }
        return s + "</svg><p class=\"note\">Candidate − reference block return: the dot is the mean over block pairs, the bar the trial's interval; right of the dashed line the candidate did better.</p></figure>"
    }

    /// A trial's blocks as logged: one bar per run of one arm, as wide as its rows, as high as
    /// its mean reward per tick; the candidate green, the reference grey.
    func runChart(_ t: RunHistory.Trial, _ runs: [ArmRun]) -> String {
        let h = 150.0, top = 10.0, bottom = 24.0
        let total = Double(runs.reduce(0) { $0 + $1.rows })
        let means = runs.map { $0.rewardSum / Double(max($0.rows, 1)) }
        var (y0, y1) = (min(means.min() ?? 0, 0), max(means.max() ?? 0, 0))
        if y1 <= y0 { y0 -= 1; y1 += 1 }
        let y = { (v: Double) in top + (1 - (v - y0) / (y1 - y0)) * (h - top - bottom) }
        let candidate = "v\(t.version)"
        var s = "<figure class=\"plot\" data-plot=\"trial-runs-v\(t.version)\" data-points=\"\(runs.count)\"><svg viewBox=\"0 0 \(n(width)) \(n(h))\" role=\"img\" aria-label=\"trial blocks\">"
        s += "<text x=\"\(n(left - 6))\" y=\"\(n(y(y1) + 4))\" font-size=\"11\" text-anchor=\"end\" fill=\"#868e96\">\(fmt(y1))</text>"
        s += "<text x=\"\(n(left - 6))\" y=\"\(n(y(y0) + 4))\" font-size=\"11\" text-anchor=\"end\" fill=\"#868e96\">\(fmt(y0))</text>"
        s += "<line x1=\"\(n(left))\" y1=\"\(n(y(0)))\" x2=\"\(n(width - right))\" y2=\"\(n(y(0)))\" stroke=\"#adb5bd\"/>"
        var x = left
        for (r, m) in zip(runs, means) {
            let w = Double(r.rows) / total * (width - left - right)
            let color = r.arm == candidate ? "#2b8a3e" : (r.arm == t.reference ? "#868e96" : "#e67700")
            let (a, b) = (min(y(m), y(0)), max(y(m), y(0)))
            s += "<rect class=\"bar\" x=\"\(n(x))\" y=\"\(n(a))\" width=\"\(n(max(w - 1, 0.5)))\" height=\"\(n(max(b - a, 1)))\" fill=\"\(color)\"><title>\(esc(r.arm)): \(r.rows) ticks, mean reward \(fmt(m))</title></rect>"
            x += w
        }
        s += "<text x=\"\(n(left))\" y=\"\(n(h - 6))\" font-size=\"11\" fill=\"#868e96\">trial of v\(t.version): \(runs.count) runs over \(Int(total)) ticks, \(esc(RunReport.date(runs.first?.firstTime ?? 0))) – \(esc(RunReport.date(runs.last?.lastTime ?? 0))) UTC</text>"
        s += "</svg><div class=\"legend\"><span><i style=\"background:#2b8a3e\"></i>candidate \(candidate)</span><span><i style=\"background:#868e96\"></i>reference \(esc(t.reference))</span><span><i style=\"background:#e67700\"></i>other</span></div></figure>"
        return s
    }
}
