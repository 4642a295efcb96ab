"""Label every segment of KEMDy20-format sessions with a trained encoder and GNN; draw one timeline per script.

    python predict.py --model results/<exp> --session DIR [--sessions 37,38] [--out predictions.csv]
                      [--online] [--device auto|cpu|N]
    python predict.py --encoder encoder/STE_TRAIN/best.pth --gnn results/<exp>/best.pth --session DIR ...

The command of temporal_gnn/labelling.py, whose docstring (this command's --help) documents the model
folder, the inputs and the online mode; docs/prediction.md the files it writes.
"""

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import pandas as pd
import torch

from encoder.core import checkpoints, config, distributed, participant, util
from encoder.core.models import inference_model
from temporal_gnn import classical, late_fusion
from temporal_gnn.labelling import (
    appended_columns,
    embedding_amp,
    load_models,
    node_csv,
    parse_args,
    parse_sessions,
    participant_segments,
    predict_online,
    predict_segments,
    prediction_table,
    score_line,
    session_segments,
    statistics_line,
    write_outputs,
)


def main() -> None:
    args = parse_args()
    sessions = parse_sessions(args.sessions)
    loaded = load_models(args)
    device = distributed.resolve_device(args.device)
    forward, note = embedding_amp(loaded.precision, device)
    if note:
        print(f"note: {note}")
    graphs, gnn = loaded.graphs, loaded.gnn.to(device)
    encoder = inference_model(checkpoints.encoder_from_checkpoint(loaded.encoder_state, loaded.encoder_path))
    encoder = encoder.to(device)
    gt, segments, unusable = session_segments(args.session, sessions)
    for block in loaded.pretrained_blocks.values():
        block.to(device)
    columns, text_note = appended_columns(loaded, segments, args.session)
    if text_note:
        print(f"note: {text_note}")
    nodes = None
    if args.online:
        torch.set_num_threads(1)  # one or two nodes per pass: too little work to share (online.py, Threads)
        amp = util.merge_settings(config.STE_forward_params, forward)["amp"]
        ids, probs, nodes, timing = predict_online(encoder, loaded.encoder_state, gnn, graphs, segments, device,
                                                   bool(amp), columns)
    else:
        forward = {**forward, "batch_size": args.batch_size, "num_workers": args.num_workers}
        ids, probs = predict_segments(encoder, loaded.encoder_state, gnn, graphs, segments, device, forward,
                                      columns)
    options = participant.InputOptions.from_inputs(loaded.encoder_state["inputs"])
    table = prediction_table(ids, probs, gt, segments, unusable, participant_segments(segments, options, gnn.causal),
                             loaded.decision)
    table["classical_predicted"] = ""
    table["fusion_predicted"] = ""
    if "classical" in loaded.system_paths:
        classical_probs = classical.segment_probabilities(loaded.system_paths["classical"], segments)
        table["classical_predicted"] = table["segment_id"].map(
            {i: config.EMOTIONS[int(p.argmax())] for i, p in classical_probs.items()}).fillna("")
        if loaded.fusion is not None:
            fused = late_fusion.fusion_labels(classical_probs, ids, probs, loaded.fusion["weight"])
            table["fusion_predicted"] = table["segment_id"].map(fused).fillna("")
    pngs = write_outputs(table, args.out, nodes)
    counts = ", ".join(f"Sess{s:02d} {n}" for s, n in table[table["predicted"] != ""].groupby("session").size().items())
    mode = (f"online, causal GNN, time_edge {graphs['time_edge']:g} s, {graphs['cross_identity']}" if args.online
            else f"graphs numv {graphs['numv']}, time_edge {graphs['time_edge']:g} s, {graphs['cross_identity']}")
    print(f"predicted {len(ids)} of {len(table)} segments ({counts}); {mode}")
    if unusable:
        reasons = pd.Series(list(unusable.values())).value_counts().sort_index()
        print(f"not predicted {len(unusable)} segments (rows with empty probabilities and a reason): "
              + ", ".join(f"{n} {reason}" for reason, n in reasons.items()))
    bio_times = int((table["time_from"] == "bio").sum())
    if bio_times:
        print(f"{bio_times} segments without annotated wav start/end: start_s/end_s from the EDA/TEMP timestamps "
              "(time_from = bio)")
    if args.online:
        print(f"online: {timing['nodes']} nodes labelled as they arrived, at most {timing['window']} nodes kept; "
              f"per node (embedding included) p50 {timing['p50_ms']:.1f} ms, p95 {timing['p95_ms']:.1f} ms")
        print(f"node labels: {node_csv(args.out)}")
    statistics = statistics_line(segments, options, gnn.causal)
    if statistics is not None:
        print(statistics)
    score = score_line(table)
    if score is not None:
        print(score)
    classical_score = score_line(table, "classical_predicted")
    if classical_score is not None:
        print(f"classical system (column classical_predicted), {classical_score}")
    fusion_score = score_line(table, "fusion_predicted")
    if fusion_score is not None:
        print(f"fusion system (column fusion_predicted), {fusion_score}")
    print(f"predictions: {args.out}")
    print(f"timelines: {', '.join(str(p) for p in pngs)}")


if __name__ == "__main__":
    util.run_cli(main)
