"""The baseline for the API benchmark: a bare FastAPI endpoint returning a job-sized JSON body."""

from fastapi import FastAPI

app = FastAPI()

BODY = {
    "id": "job_0000000000000000000000000",
    "object": "job",
    "status": "succeeded",
    "spec": {"hyperparameters": {"epochs": 10, "batch_size": 64}},
    "metrics": {"student_accuracy": 0.97, "teacher_accuracy": 0.98},
}


@app.get("/v1/jobs/{job_id}")
def get_job(job_id: str) -> dict:
    return BODY
