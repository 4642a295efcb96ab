"""The GNN side of the pipeline as a library, beside the encoder's (encoder/core): node files to temporal
graphs, the GNN and the systems beside it, their training and evaluation, the run's stages and executor,
prediction on new recordings and the CV summaries. The original's commands stay at the repository's top
level as thin scripts over these modules (generate_graph.py, train_val.py, run_pipeline.py, predict.py,
cv_results.py); data_loader.py and models_gnn.py re-export graph_data and gnn_model for the original's
imports.

    graph_building   node files -> temporal graphs (GraphSettings, GraphFolders; generate_graph.py)
    graph_data       graph folders on disk, the build record, speaker windows for the GRU baseline
    gnn_model        the three-branch SPELL GNN and its causal variant
    temporal_model   the GRU baseline
    gnn_training     GnnSettings, training, selection on validation, test metrics (train_val.py)
    systems          the systems of every table, as data
    classical        the classical system and the opt-in `prosody` node block
    model_folder     results/<exp>/model/: the GNN, its encoder and model.json
    online           the causal GNN over a stream of nodes
    labelling        labelling new recordings with a trained model (predict.py)
    stages           the pipeline's stages, its plan and the executor
    pipeline_run     one run's settings, its single run or CV, its tables (run_pipeline.py)
    cv_results       CV summaries, session-bootstrap intervals, seeds and ablation tables, comparisons
"""
