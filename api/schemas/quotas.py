"""Quota usage responses: what a project holds per resource class, and its limit."""

from __future__ import annotations

from pydantic import BaseModel, Field


class QuotaUsage(BaseModel):
    project_id: str
    resource: str = Field(description="a resource class, e.g. FPGA, PGPU, VGPU, CUSTOM_QAT")
    used: int = Field(description="units held by Bound accelerator requests")
    reserved: int = Field(description="units held by binds in flight (BindStarted)")
    limit: int = Field(description="the project's limit for the resource class; -1: unlimited")


class QuotaUsageList(BaseModel):
    quota_usages: list[QuotaUsage]


class QuotaUsageQuery(BaseModel):
    project_id: str | None = Field(default=None, description="another project's usage (admins only); an "
                                                               "admin without it sees every project's")
