/// The shape of a Q-network: an MLP with ReLU hidden layers and a linear (or dueling) head.
///
/// Layer `l` maps `layerSizes[l]` inputs to `layerSizes[l + 1]` outputs. With `dueling`, the
/// last layer has `actionCount + 1` outputs: output 0 is the state value V(s), outputs
/// 1…A the advantages, and Q(s, a) = V(s) + A(s, a) − mean over a of A(s, a).
public struct Architecture: Sendable, Equatable, Codable {
    /// Width of the (normalised) state vector.
    public var inputCount: Int
    /// Widths of the hidden layers (default 2 × 64).
    public var hidden: [Int]
    /// Number of discrete actions.
    public var actionCount: Int
    /// Whether the head is dueling (value + advantage streams).
    public var dueling: Bool

    /// An architecture; `hidden` defaults to two layers of 64 units.
    public init(inputCount: Int, hidden: [Int] = [64, 64], actionCount: Int, dueling: Bool = false) {
        self.inputCount = inputCount
        self.hidden = hidden
        self.actionCount = actionCount
        self.dueling = dueling
    }

    /// Widths from input to the last layer's output (A, or A + 1 when dueling).
    public var layerSizes: [Int] { [inputCount] + hidden + [dueling ? actionCount + 1 : actionCount] }

    /// Number of linear layers.
    public var layerCount: Int { hidden.count + 1 }

    /// Where layer `l`'s weight (out, in) and bias (out) live in the parameter buffer.
    public struct LayerSlice: Sendable, Equatable {
        /// Input width of the layer.
        public var inputs: Int
        /// Output width of the layer.
        public var outputs: Int
        /// Offset of the weight matrix, row-major (out, in).
        public var weight: Int
        /// Offset of the bias vector (out).
        public var bias: Int
    }

    /// The layers' slices of the one contiguous parameter buffer, in order W0 b0 W1 b1 ….
    public var slices: [LayerSlice] {
        var out: [LayerSlice] = []
        var offset = 0
        let sizes = layerSizes
        for l in 0..<layerCount {
            let i = sizes[l], o = sizes[l + 1]
            out.append(LayerSlice(inputs: i, outputs: o, weight: offset, bias: offset + o * i))
            offset += o * i + o
        }
        return out
    }

    /// Total number of fp32 parameters.
    public var parameterCount: Int {
        let s = layerSizes
        return (0..<layerCount).reduce(0) { $0 + s[$1 + 1] * s[$1] + s[$1 + 1] }
    }

    /// The widest layer an architecture may have (a bound that keeps every size computation
    /// far from overflow; the networks EdgeQ serves are a few hundred units wide).
    public static let maxWidth = 1 << 20
    /// The most hidden layers an architecture may have.
    public static let maxHiddenLayers = 64

    /// Throws `QNetError` (`invalidArgument`) when a width is not in 1…`maxWidth` or there are
    /// more than `maxHiddenLayers` hidden layers.
    public func validate() throws(QNetError) {
        let widths = [inputCount, actionCount] + hidden
        guard widths.allSatisfy({ $0 > 0 && $0 <= Self.maxWidth }), hidden.count <= Self.maxHiddenLayers else {
            throw QNetError(.invalidArgument, "architecture \(self.label): every width must be 1…\(Self.maxWidth), with at most \(Self.maxHiddenLayers) hidden layers")
        }
    }

    /// "8-64-64-5" (and "+dueling").
    public var label: String {
        ([inputCount] + hidden + [actionCount]).map(String.init).joined(separator: "-") + (dueling ? "+dueling" : "")
    }
}
