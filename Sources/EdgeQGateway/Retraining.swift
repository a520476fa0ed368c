import Foundation

extension Gateway {
    /// `cmd/retrain`. Filled in by the retraining work (issue #6).
    func retrainRequested(steps: Int?, seconds: Double?, window: Int?, reply: (Bool, String?, [String: JSONValue]) -> Void) {
        reply(false, "retraining on the device is not available in this build yet; train offline with `edgeq train` and promote", [:])
    }

    /// Extra fields of the status document (retraining, live guard).
    func extraStatus() -> [String: JSONValue] { [:] }
}
