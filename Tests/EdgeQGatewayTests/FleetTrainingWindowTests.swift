@testable import EdgeQGateway
import EdgeQLog
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// What a fleet training reads (docs/fleet.md, "Training and publishing"): with `train_rows`,
/// each gateway's newest rows, the window shared evenly among the gateways; the retraining's
/// held-out tail still holds every gateway's newest tenth.
@Suite struct FleetTrainingWindowTests {
    /// Rows whose tick is their id, on a state of width 2, tagged by gateway through the reward.
    static func rows(_ n: Int, gateway: Int) -> [LoggedTransition] {
        (1...n).map { i in
            LoggedTransition(id: Int64(i), transition: Transition(
                time: 1_790_000_000 + Double(i), tick: Int64(i), episode: 0, state: [Float(i), 0], action: i % 2, actor: .incumbent,
                reward: Double(gateway), nextState: [Float(i + 1), 0], nextMask: nil, terminal: false, truncated: false,
                mode: .shadow, modelVersion: nil, qValues: nil, modelAction: nil, flags: []))
        }
    }

    /// `train_every: N/gateway`: a training is due at N new rows for each gateway that sent
    /// some since the last training began, and runs the updates times those gateways.
    @Test func perGatewayTrainEveryScalesTheThresholdAndTheUpdatesWithTheGatewaysThatShipped() throws {
        var p = FleetTrainer.Pending()
        #expect(!p.due(trainEvery: 100, perGateway: true) && !p.due(trainEvery: 100, perGateway: false))
        p.rows = 150
        p.gateways = ["a"]
        #expect(p.due(trainEvery: 100, perGateway: true) && p.threshold(trainEvery: 100, perGateway: true) == 100)
        p.gateways = ["a", "b"]
        #expect(!p.due(trainEvery: 100, perGateway: true) && p.threshold(trainEvery: 100, perGateway: true) == 200)
        #expect(p.due(trainEvery: 100, perGateway: false), "pooled: 150 rows ≥ 100, whatever the gateways")
        p.rows = 200
        #expect(p.due(trainEvery: 100, perGateway: true))
        let map = try TopicMap.parse(yaml: """
            gateway: {id: g}
            signals: [{name: x, topic: p/s, json: x}]
            state: {features: [{signal: x}]}
            tick: {trigger: p/s}
            reward: -abs(x)
            actions: {list: [{name: a, publish: {topic: p/c, payload: '0'}}, {name: b, publish: {topic: p/c, payload: '1'}}]}
            learning: {updates_per_retrain: 700}
            """)
        #expect(FleetTrainer.updates(base: nil, map: map, perGateway: false, gateways: 3) == nil, "pooled: the mapping's, as before")
        #expect(FleetTrainer.updates(base: 900, map: map, perGateway: false, gateways: 3) == 900)
        #expect(FleetTrainer.updates(base: nil, map: map, perGateway: true, gateways: 3) == 2100)
        #expect(FleetTrainer.updates(base: 900, map: map, perGateway: true, gateways: 2) == 1800)
        #expect(FleetTrainer.updates(base: 900, map: map, perGateway: true, gateways: 0) == 900)
    }

    @Test func theWindowIsSharedEvenlyAndAGatewayWithFewerRowsGivesTheRestAway() {
        #expect(FleetTrainer.shares(["a": 30, "b": 100, "c": 1000], window: 300) == ["a": 30, "b": 100, "c": 170])
        #expect(FleetTrainer.shares(["a": 500, "b": 500, "c": 500], window: 300) == ["a": 100, "b": 100, "c": 100])
        #expect(FleetTrainer.shares(["a": 500, "b": 500, "c": 500], window: 10).values.sorted() == [3, 3, 4])
        #expect(FleetTrainer.shares(["a": 5, "b": 7], window: 1000) == ["a": 5, "b": 7])
        #expect(FleetTrainer.shares(["a": 0, "b": 7], window: 4) == ["a": 0, "b": 4])
        #expect(FleetTrainer.shares([:], window: 4).isEmpty)
        for total in [1, 99, 100, 1234] {
            let s = FleetTrainer.shares(["a": 400, "b": 50, "c": 800, "d": 1], window: total)
            #expect(s.values.reduce(0, +) == min(total, 1251), "window \(total): \(s)")
        }
    }

    @Test func aTrainingWindowReadsEachGatewaysNewestRows() throws {
        let dir = try TempDir()
        let log = try FleetLog(path: dir.url.appendingPathComponent("fleet.sqlite").path)
        let sizes = ["gw-a": 30, "gw-b": 100, "gw-c": 1000]
        for (i, (g, n)) in sizes.sorted(by: { $0.key < $1.key }).enumerated() {
            let r = Self.rows(n, gateway: i)
            #expect(try log.ingest(FleetBatch(gateway: g, origin: 0, after: 0, last: Int64(n), rows: r), learner: "l").inserted == n)
        }
        let whole = try FleetTrainer.fleetRows(log)
        #expect(whole.rows.count == 1130 && whole.perGateway == sizes)
        #expect(try FleetTrainer.fleetRows(log, window: 5000).rows == whole.rows)

        let (rows, per) = try FleetTrainer.fleetRows(log, window: 300)
        #expect(rows.count == 300 && per == ["gw-a": 30, "gw-b": 100, "gw-c": 170])
        // gw-c's newest 170 (ticks 831–1000), in log order; the training part first, then every
        // gateway's newest tenth (the retraining holds out the list's last tenth).
        let c: [Int64] = rows.filter { $0.transition.reward == 2 }.map { $0.transition.tick }
        #expect(Set(c) == Set(Int64(831)...1000))
        let heldOut: [Int64] = rows.suffix(3 + 10 + 17).map { $0.transition.tick }
        let expected: [Int64] = Array(28...30) + Array(91...100) + Array(984...1000)
        #expect(heldOut == expected)
        for g in 0..<3 {
            let ticks: [Int64] = rows.filter { $0.transition.reward == Double(g) }.map { $0.transition.tick }
            #expect(ticks == ticks.sorted(), "gateway \(g)'s rows out of order")
        }
    }
}
