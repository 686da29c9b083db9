"""Training logs as data: our solver's CSV and Caffe's glog text give the same rows."""
import pytest

from deepmammo.report.logs import parse_caffe_log, read_log_csv, read_training_log

# Lines as real BVLC Caffe prints them (newer glog's I<YYYYMMDD> date in two of them).
CAFFE_LOG = """\
I1126 01:02:03.000001  4242 solver.cpp:57] Solving AlexNet
I1126 01:02:03.000002  4242 solver.cpp:347] Iteration 0, Testing net (#0)
I1126 01:02:04.000003  4242 solver.cpp:414]     Test net output #0: accuracy = 0.5
I1126 01:02:04.000004  4242 solver.cpp:414]     Test net output #1: loss = 0.693147 (* 1 = 0.693147 loss)
I1126 01:02:05.000005  4242 solver.cpp:243] Iteration 0 (0 iter/s, 1.2s/20 iters), loss = 0.7
I1126 01:02:05.000006  4242 solver.cpp:259]     Train net output #0: loss = 0.7 (* 1 = 0.7 loss)
I1126 01:02:05.000007  4242 sgd_solver.cpp:106] Iteration 0, lr = 0.001
I20261126 01:03:05.000005  4242 solver.cpp:243] Iteration 20 (3.1 iter/s, 6.4s/20 iters), loss = 0.61
I20261126 01:03:05.000006  4242 solver.cpp:259]     Train net output #0: loss = 0.58 (* 1 = 0.58 loss)
I1126 01:03:05.000007  4242 sgd_solver.cpp:106] Iteration 20, lr = 0.0009
I1126 01:04:00.000000  4242 solver.cpp:347] Iteration 40, Testing net (#0)
I1126 01:04:01.000000  4242 solver.cpp:414]     Test net output #0: accuracy = 0.75
I1126 01:04:01.000000  4242 solver.cpp:414]     Test net output #1: loss = 0.5 (* 1 = 0.5 loss)
I1126 01:04:02.000000  4242 solver.cpp:464] Snapshotting to binary proto file x_iter_40.caffemodel
I1126 01:04:02.000000  4242 solver.cpp:327] Iteration 40, loss = 0.55
I1126 01:04:02.000000  4242 solver.cpp:332] Optimization Done.
"""


def test_parse_caffe_log_text(tmp_path):
    path = tmp_path / "train.log"
    path.write_text(CAFFE_LOG)
    train, test = parse_caffe_log(str(path))
    assert [r["iteration"] for r in test] == [0, 40]
    assert test[1] == {"iteration": 40, "test0_accuracy": 0.75, "test0_loss": 0.5}
    assert train[0] == {"iteration": 0, "train_smoothed_loss": 0.7, "train_loss": 0.7,
                        "lr": 0.001}
    assert train[1]["train_loss"] == 0.58 and train[1]["lr"] == pytest.approx(0.0009)
    assert train[-1] == {"iteration": 40, "train_smoothed_loss": 0.55}


def test_csv_and_log_agree_and_csv_is_preferred(tmp_path):
    (tmp_path / "train.log").write_text(CAFFE_LOG)
    (tmp_path / "train_log.csv").write_text(
        "iteration,lr,loss,train_loss,test0_accuracy,test0_loss\n"
        "0,0.001,0.7,0.7,0.5,0.693147\n20,0.0009,0.61,0.58,,\n40,,,,0.75,0.5\n")
    train, test = read_training_log(str(tmp_path))
    log_train, log_test = parse_caffe_log(str(tmp_path / "train.log"))
    assert test == log_test
    for a, b in zip(train, log_train):
        for key, value in a.items():
            assert b[key] == pytest.approx(value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train_log.csv or train.log"):
        read_training_log(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="training log not found"):
        read_training_log(str(tmp_path / "nowhere.log"))


def test_csv_without_iteration_column_is_an_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("step,loss\n1,2\n")
    with pytest.raises(ValueError, match="'iteration' column"):
        read_log_csv(str(path))
