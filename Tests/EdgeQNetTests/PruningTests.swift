import EdgeQCore
@testable import EdgeQNet
import Testing

/// Magnitude and structured pruning with fine-tuning, on a random 8-64-64-5 network.
@Suite struct PruningTests {
    @Test func magnitudePruningReachesTheTargetSparsityAndKeepsTheActions() throws {
        let (model, raw) = try makeModel(states: 2_048)
        let net = try model.makeNetwork()
        let states = model.normalization.apply(Array(raw.prefix(1_024 * 8)))
        let pruned = try Pruning.magnitude(net, sparsity: 0.5, states: states, fineTuneSteps: 400)
        let prunedModel = try QModel(network: pruned, actionNames: model.actionNames, normalization: model.normalization,
                                     calibrationStates: Array(raw.prefix(1_024 * 8)))
        let report = Pruning.report(original: model, pruned: prunedModel, heldOut: Array(raw.suffix(1_024 * 8)))
        #expect(abs(report.sparsity - 0.5) < 0.01)
        #expect(report.nonzeroParameters < model.parameters.count * 6 / 10)
        #expect(report.agreement >= 0.9, "agreement \(report.agreement)")
        #expect(report.int8Microseconds > 0 && report.unprunedInt8Microseconds > 0)
    }

    @Test func structuredPruningRemovesUnitsAndKeepsTheActions() throws {
        let (model, raw) = try makeModel(states: 2_048)
        let net = try model.makeNetwork()
        let states = model.normalization.apply(Array(raw.prefix(1_024 * 8)))
        let pruned = try Pruning.structured(net, keepFraction: 0.75, states: states, fineTuneSteps: 400)
        #expect(pruned.architecture.hidden == [48, 48])
        let prunedModel = try QModel(network: pruned, actionNames: model.actionNames, normalization: model.normalization,
                                     calibrationStates: Array(raw.prefix(1_024 * 8)))
        let report = Pruning.report(original: model, pruned: prunedModel, heldOut: Array(raw.suffix(1_024 * 8)))
        #expect(report.int8WeightBytes < model.int8.layers.reduce(0) { $0 + $1.weights.count })
        #expect(report.agreement >= 0.85, "agreement \(report.agreement)")
    }

    @Test func structuredPruningWithNothingRemovedIsTheSameNetwork() throws {
        let (model, raw) = try makeModel()
        let net = try model.makeNetwork()
        let pruned = try Pruning.structured(net, keepFraction: 1, states: model.normalization.apply(raw), fineTuneSteps: 0)
        #expect(pruned.parameterArray == net.parameterArray)
    }

    @Test func badArgumentsAreRejected() throws {
        let net = try MLP(Architecture(inputCount: 2, actionCount: 2), seed: 1)
        #expect(throws: QNetError.self) { _ = try Pruning.magnitude(net, sparsity: 1, states: [0, 0]) }
        #expect(throws: QNetError.self) { _ = try Pruning.structured(net, keepFraction: 0, states: [0, 0]) }
        #expect(throws: QNetError.self) { _ = try Pruning.magnitude(net, sparsity: 0.5, states: [0, 0, 0]) }
    }
}
