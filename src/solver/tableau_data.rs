// The coefficient table of every integration method, with the constants of the step-size
// control and of the steady-state iterations: the single source for the CPU reference and,
// through build.rs (which `include!`s this file), for the WGSL and CUDA kernels.
// Data only: no imports, no code that needs the crate.

/// Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", J. Comput. Appl. Math.
/// 6(1):19–26. 5th-order solution (FSAL: row 7 of `a` = the weights `b`), embedded 4th order.
/// Dense output of Shampine (1986), "Some practical Runge-Kutta formulas", Math. Comp. 46:135–150,
/// in the form of Hairer, Nørsett & Wanner, Solving ODEs I (2nd ed.), routine DOPRI5 (CONTD5).
pub const DOPRI5_C: [f64; 7] = [0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0];
pub const DOPRI5_A: [[f64; 6]; 7] = [
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.2, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
    [
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
        0.0,
        0.0,
    ],
    [
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
        0.0,
    ],
    [
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// Error weights (5th-order minus embedded 4th-order weights), applied to k1..k7.
pub const DOPRI5_E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];
/// Shampine's dense-output weights d1..d7 (CONTD5's D1, D3, D4, D5, D6, D7; d2 = 0).
pub const DOPRI5_D: [f64; 7] = [
    -12715105075.0 / 11282082432.0,
    0.0,
    87487479700.0 / 32700410799.0,
    -10690763975.0 / 1880347072.0,
    701980252875.0 / 199316789632.0,
    -1453857185.0 / 822651844.0,
    69997945.0 / 29380423.0,
];

/// Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column
/// simplifying assumption", Comput. Math. Appl. 62(2):770–775. FSAL: row 7 of `a` holds the
/// 5th-order weights. Values to double precision as tabulated in OrdinaryDiffEq.jl.
pub const TSIT5_C: [f64; 7] = [0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0];
pub const TSIT5_A: [[f64; 6]; 7] = [
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.161, 0.0, 0.0, 0.0, 0.0, 0.0],
    [-0.008480655492356989, 0.335480655492357, 0.0, 0.0, 0.0, 0.0],
    [
        2.8971530571054935,
        -6.359448489975075,
        4.3622954328695815,
        0.0,
        0.0,
        0.0,
    ],
    [
        5.325864828439257,
        -11.748883564062828,
        7.4955393428898365,
        -0.09249506636175525,
        0.0,
        0.0,
    ],
    [
        5.86145544294642,
        -12.92096931784711,
        8.159367898576159,
        -0.071584973281401,
        -0.028269050394068383,
        0.0,
    ],
    [
        0.09646076681806523,
        0.01,
        0.4798896504144996,
        1.379008574103742,
        -3.290069515436081,
        2.324710524099774,
    ],
];
/// Error weights (embedded minus 5th-order weights), applied to k1..k7.
pub const TSIT5_E: [f64; 7] = [
    -0.00178001105222577714,
    -0.0008164344596567469,
    0.007880878010261995,
    -0.1447110071732629,
    0.5823571654525552,
    -0.45808210592918697,
    0.015151515151515152,
];
/// Dense output: b_i(θ) = Σ_j R[i][j]·θ^(j+1), j = 0..3, for the stages k1..k7 (Tsitouras 2011).
pub const TSIT5_R: [[f64; 4]; 7] = [
    [
        1.0,
        -2.763706197274826,
        2.9132554618219126,
        -1.0530884977290216,
    ],
    [0.0, 0.13169999999999998, -0.2234, 0.1017],
    [
        0.0,
        3.9302962368947516,
        -5.941033872131505,
        2.490627285651253,
    ],
    [
        0.0,
        -12.411077166933676,
        30.33818863028232,
        -16.548102889244902,
    ],
    [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
    [
        0.0,
        -27.896526289197286,
        65.09189467479366,
        -34.87065786149661,
    ],
    [0.0, 1.5, -4.0, 2.5],
];

/// Classical 4th-order Runge–Kutta (Kutta 1901).
pub const RK4_C: [f64; 4] = [0.0, 0.5, 0.5, 1.0];
pub const RK4_B: [f64; 4] = [1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0];

/// Rosenbrock 2(3) of Shampine & Reichelt (1997), "The MATLAB ODE Suite", SIAM J. Sci. Comput.
/// 18(1):1–22 (ode23s): d = 1/(2 + √2), e32 = 6 + √2.
pub const ROS23_D: f64 = 0.29289321881345247559915563789515096071516406231153;
pub const ROS23_E32: f64 = 7.4142135623730950488016887242096980785696718753769;

/// Rodas4 of Hairer & Wanner, Solving ODEs II (2nd ed., 1996), §IV.7 (code RODAS), in the
/// transformed form u_i = y0 + Σ a_ij k_j, (I/(hγ) − J) k_i = f(t0 + c_i h, u_i) + h d_i ∂f/∂t
/// + Σ (c_ij / h) k_j; y1 = u_6 + k_6 where u_6 = u_5 + k_5; the error estimate is k_6.
///
/// Dense output y(θ) = (1−θ) y0 + θ (y1 + (1−θ)(Σ h1_j k_j + θ Σ h2_j k_j)).
pub const RODAS4_GAMMA: f64 = 0.25;
pub const RODAS4_A: [[f64; 5]; 6] = [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.544, 0.0, 0.0, 0.0, 0.0],
    [0.9466785280815826, 0.2557011698983284, 0.0, 0.0, 0.0],
    [
        3.314825187068521,
        2.896124015972201,
        0.9986419139977817,
        0.0,
        0.0,
    ],
    [
        1.221224509226641,
        6.019134481288629,
        12.53708332932087,
        -0.6878860361058950,
        0.0,
    ],
    [
        1.221224509226641,
        6.019134481288629,
        12.53708332932087,
        -0.6878860361058950,
        1.0,
    ],
];
pub const RODAS4_CC: [[f64; 5]; 6] = [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [-5.6688, 0.0, 0.0, 0.0, 0.0],
    [-2.430093356833875, -0.2063599157091915, 0.0, 0.0, 0.0],
    [
        -0.1073529058151375,
        -9.594562251023355,
        -20.47028614809616,
        0.0,
        0.0,
    ],
    [
        7.496443313967647,
        -10.24680431464352,
        -33.99990352819905,
        11.70890893206160,
        0.0,
    ],
    [
        8.083246795921522,
        -7.981132988064893,
        -31.52159432874371,
        16.31930543123136,
        -6.058818238834054,
    ],
];
pub const RODAS4_C: [f64; 6] = [0.0, 0.386, 0.21, 0.63, 1.0, 1.0];
pub const RODAS4_D: [f64; 6] = [0.25, -0.1043, 0.1035, -0.0362, 0.0, 0.0];
pub const RODAS4_H: [[f64; 5]; 2] = [
    [
        10.12623508344586,
        -7.487995877610167,
        -34.80091861555747,
        -7.992771707568823,
        1.025137723295662,
    ],
    [
        -0.6762803392801253,
        6.087714651680015,
        16.43084320892478,
        24.76722511418386,
        -6.594389125716872,
    ],
];

/// A point inside a Rodas4 step where its dense output is checked: θ, the interpolant
/// u(θ) = u[0]·y0 + u[1]·y1 + u[2]·d0 + u[3]·d1 (d0, d1 the two vectors of [`RODAS4_H`]), and
/// its derivative in θ, y1 − y0 + du[0]·d0 + du[1]·d1. Of u(θ) = (1 − θ)·y0 + θ·(y1 + (1 − θ)·
/// (d0 + θ·d1)).
pub struct DensePoint {
    pub theta: f64,
    pub u: [f64; 4],
    pub du: [f64; 2],
}

/// Rodas4's dense-output check at θ = ¼ and ¾ (every coefficient exact in binary).
pub const RODAS4_DENSE_CHECK: [DensePoint; 2] = [
    DensePoint {
        theta: 0.25,
        u: [0.75, 0.25, 0.1875, 0.046875],
        du: [0.5, 0.3125],
    },
    DensePoint {
        theta: 0.75,
        u: [0.25, 0.75, 0.1875, 0.140625],
        du: [-0.5, -0.1875],
    },
];

/// Step-size controller: safety factor and limits on the step-size ratio.
pub const STEP_SAFETY: f64 = 0.9;
pub const STEP_FAC_MIN: f64 = 0.2;
pub const STEP_FAC_MAX: f64 = 10.0;
/// PI controller gain on the previous error (Hairer's DOPRI5: β = 0.04); 0 for Rosenbrock.
pub const STEP_BETA_EXPLICIT: f64 = 0.04;
/// Floor of an accepted step's error norm in the controller (its logarithm stays finite).
pub const STEP_ERR_MIN: f64 = 1e-10;
/// The controller's memory of the previous error: its value at the start (and after a
/// reset), and its floor.
pub const STEP_ERR_PREV_MIN: f64 = 1e-4;
/// A step must move t by at least this many units of t's round-off (machine epsilon · |t|),
/// and a step that would end within this many of a stopping point (beyond the snap below)
/// ends there: the CPU reference and both kernels take this one rule.
pub const STEP_ULPS: f64 = 2.0;
/// A first step (from the starting-step estimate, which can be far below what a tolerance
/// allows where atol is tiny against a fast component) is at least this many least steps, so
/// that a rejection or two can still shrink it.
pub const STEP_START: f64 = 10.0;
/// A step that would end within this fraction of its segment's span of the segment's end
/// ends there, in f64 (the CPU reference and the f64 kernels) and in f32.
pub const SNAP_F64: f64 = 1e-12;
pub const SNAP_F32: f64 = 1e-6;
/// Event times closer than this fraction of the later one's magnitude (at least 1) are one
/// time: an infusion's end computed as start + AMT/RATE next to a record at that time, in the
/// records drivers and the steady-state loops of the CPU reference and of both kernels.
pub const SAME_TIME: f64 = 1e-13;

/// Steady state (src/backend/records.rs, and the kernels' copies of its iterations): dosing
/// intervals are repeated until the estimated remaining change is below this fraction of the
/// solver's tolerance (atol + rtol·|x|).
pub const SS_FRACTION: f64 = 0.01;
/// A change of the state over a whole interval this small (in units of the solver's tolerance)
/// that has stopped shrinking (two ratios of consecutive changes in a row at least [`SS_FLAT`])
/// is the integration's own error: the steady state is reached.
pub const SS_NOISE: f64 = 10.0;
/// A change at the noise level this many intervals in a row ends the iterations even where it
/// neither settles nor shrinks (the integration's own error can cycle with the step sequence).
pub const SS_NOISE_CYCLES: u32 = 64;
/// A state whose change over an interval is more than [`SS_FRACTION`] of its tolerance and equals its change over
/// the interval before to this fraction (measured to better than that: 32 ulps of the state
/// below this fraction of the change) moves by the same amount every interval: it grows
/// without bound, and has no steady state, however small that amount is against the tolerance
/// at its size. Where that holds [`SS_TRANSLATING`] intervals in a row, the stops at the noise
/// level do not end the iterations. (A slow mode shrinks its change by 1 − ρ per interval: it
/// differs from such a state only for half-lives beyond 690 000 intervals.)
pub const SS_TRANSLATION: f64 = 1e-6;
pub const SS_TRANSLATING: u32 = 2;
/// The ratio of consecutive changes from which they count as not shrinking. A steady state
/// approached slowly shrinks its changes by a steady ratio close to 1 (0.98 per interval for a
/// half-life 35 times the interval), and the change still to come is then about 50 times the
/// last: at the noise level, that is hundreds of tolerance units, so such a change is followed
/// until the estimate of what remains is small. Ratios from 0.999 on (a half-life over 690
/// intervals) count as noise at the noise level unless two of them agree as a slow mode's do
/// ([`SS_STEADY`]; it is then extrapolated); a steady-state infusion's span
/// (src/backend/records.rs, `Cpu::steady_infusion`) doubles instead.
pub const SS_FLAT: f64 = 0.999;
/// A slow approach whose ratio ρ has held steady (two consecutive ratios within this fraction
/// of 1 − ρ), from [`SS_JUMP`] up to [`SS_JUMP_MAX`], is extrapolated: the iterate jumps to where the
/// geometric series of its changes ends, x + Δx·ρ/(1 − ρ) (Δx the last change), which is the
/// steady state wherever the slowest mode is all that is left, and the iterations go on from
/// there (a jump that would change the sign of a state is not taken).
pub const SS_STEADY: f64 = 0.1;
/// Two flat ratios within this many times 1 − ρ of each other (and below [`SS_JUMP_MAX`]) may
/// be a slow mode still settling (the first ratio after a faster mode has decayed carries what
/// is left of it): the change is not taken for noise, and the next interval tells. Noise makes
/// ratios this close to 1 differ by far more; where it does not, the iterations end after
/// [`SS_NOISE_CYCLES`] intervals at the noise level.
pub const SS_SETTLING: f64 = 1.0;
/// The smallest ratio extrapolated: faster approaches take few intervals anyway.
pub const SS_JUMP: f64 = 0.5;
/// The largest ratio extrapolated (a half-life of 69 000 intervals): two ratios closer to 1
/// that agree are a change that has stopped shrinking (the ratios are capped at
/// [`SS_RATIO_MAX`]).
pub const SS_JUMP_MAX: f64 = 0.99999;
/// Ratios of changes are capped here: a change that grew counts as one that did not shrink.
pub const SS_RATIO_MAX: f64 = 0.999_999;
/// Below [`SS_JUMP_SLOW`], a jump is made only where the change still to come is more than
/// this (in units of the tolerance): smaller changes can be within the integration's own
/// error, which varies from one iterate to the next, and an extrapolation along them then
/// lands no closer, while plain iteration shrinks them a hundredfold in a few intervals. A
/// jump whose two ratios agree so closely that it lands within [`SS_FRACTION`] of its aim
/// (change·|ρ − ρ′|/(1 − ρ)², what an error ρ − ρ′ in the ratio moves it by) is made all the
/// same: such agreement is a mode's, not noise's.
pub const SS_JUMP_ABOVE: f64 = 1.0;
/// From this ratio on, plain iteration takes over 40 intervals to shrink the change a
/// hundredfold, and a jump is made however little is still to come.
pub const SS_JUMP_SLOW: f64 = 0.9;
/// The previous change when there is none (since the start or a jump).
pub const SS_NONE: f64 = 3.0e38;
/// A state that changes over a whole interval by no more than this many units of round-off
/// (ulps of its value) has stopped changing at the precision's resolution: where the
/// tolerance is close to round-off (f32 kernels) the changes can settle into a cycle there
/// instead of shrinking.
pub const SS_ULPS: f64 = 16.0;
/// At most this many dosing intervals when looking for a steady state.
pub const SS_MAX_CYCLES: u32 = 100_000;
/// A steady-state infusion doubles its span at most this many times, up to this span.
pub const SS_INFUSION_DOUBLINGS: u32 = 80;
pub const SS_INFUSION_SPAN_MAX: f64 = 1e12;
