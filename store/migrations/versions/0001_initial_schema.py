"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_profiles',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.Column('project_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_profiles'))
    )
    with op.batch_alter_table('device_profiles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_profiles_name'), ['name'], unique=True)
        batch_op.create_index(batch_op.f('ix_device_profiles_uuid'), ['uuid'], unique=True)

    op.create_table('devices',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('vendor', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('std_board_info', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('vendor_board_info', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('hostname', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('std_board_info_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices')),
    sa.UniqueConstraint('hostname', 'std_board_info_key', name='uq_device_host_board')
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_devices_hostname'), ['hostname'], unique=False)
        batch_op.create_index(batch_op.f('ix_devices_uuid'), ['uuid'], unique=True)

    op.create_table('hosts',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hostname', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('report_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('compute_rp_uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('sync_error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts'))
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hosts_hostname'), ['hostname'], unique=True)

    op.create_table('placement_tombstones',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rp_uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('hostname', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_placement_tombstones')),
    sa.UniqueConstraint('rp_uuid', name=op.f('uq_placement_tombstones_rp_uuid'))
    )
    op.create_table('controlpath_ids',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('cpid_type', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('cpid_info', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                            name=op.f('fk_controlpath_ids_device_id'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_controlpath_ids')),
    sa.UniqueConstraint('uuid', name=op.f('uq_controlpath_ids_uuid'))
    )
    with op.batch_alter_table('controlpath_ids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_controlpath_ids_device_id'), ['device_id'], unique=False)

    op.create_table('deployables',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('root_id', sa.Integer(), nullable=True),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('num_accelerators', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('driver_name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('rp_uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('bitstream_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('placement_state', sa.JSON(), nullable=True),
    sa.Column('placement_dirty', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                            name=op.f('fk_deployables_device_id'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['deployables.id'],
                            name=op.f('fk_deployables_parent_id'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['root_id'], ['deployables.id'],
                            name=op.f('fk_deployables_root_id'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deployables'))
    )
    with op.batch_alter_table('deployables', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployables_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployables_placement_dirty'), ['placement_dirty'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployables_rp_uuid'), ['rp_uuid'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployables_uuid'), ['uuid'], unique=True)

    op.create_table('attach_handles',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('deployable_id', sa.Integer(), nullable=False),
    sa.Column('cpid_id', sa.Integer(), nullable=True),
    sa.Column('in_use', sa.Boolean(), nullable=False),
    sa.Column('attach_type', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('attach_info', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['cpid_id'], ['controlpath_ids.id'],
                            name=op.f('fk_attach_handles_cpid_id'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['deployable_id'], ['deployables.id'],
                            name=op.f('fk_attach_handles_deployable_id'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attach_handles')),
    sa.UniqueConstraint('uuid', name=op.f('uq_attach_handles_uuid'))
    )
    with op.batch_alter_table('attach_handles', schema=None) as batch_op:
        batch_op.create_index('ix_attach_handles_free', ['deployable_id', 'in_use'], unique=False)

    op.create_table('attributes',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('deployable_id', sa.Integer(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('value', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.ForeignKeyConstraint(['deployable_id'], ['deployables.id'],
                            name=op.f('fk_attributes_deployable_id'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attributes'))
    )
    with op.batch_alter_table('attributes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_attributes_deployable_id'), ['deployable_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_attributes_uuid'), ['uuid'], unique=True)

    op.create_table('program_requests',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('deployable_id', sa.Integer(), nullable=False),
    sa.Column('image_uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('project_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.ForeignKeyConstraint(['deployable_id'], ['deployables.id'],
                            name=op.f('fk_program_requests_deployable_id'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_program_requests')),
    sa.UniqueConstraint('uuid', name=op.f('uq_program_requests_uuid'))
    )
    with op.batch_alter_table('program_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_program_requests_deployable_id'),
                              ['deployable_id'], unique=False)

    op.create_table('extended_accelerator_requests',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('device_profile_id', sa.Integer(), nullable=False),
    sa.Column('device_profile_group_id', sa.Integer(), nullable=False),
    sa.Column('hostname', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('device_rp_uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('instance_uuid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('project_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('attach_handle_id', sa.Integer(), nullable=True),
    sa.Column('deployable_id', sa.Integer(), nullable=True),
    sa.Column('bind_error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('nova_event_pending', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['attach_handle_id'], ['attach_handles.id'],
                            name=op.f('fk_extended_accelerator_requests_attach_handle_id'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['deployable_id'], ['deployables.id'],
                            name=op.f('fk_extended_accelerator_requests_deployable_id'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['device_profile_id'], ['device_profiles.id'],
                            name=op.f('fk_extended_accelerator_requests_device_profile_id'),
                            ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_extended_accelerator_requests')),
    sa.UniqueConstraint('attach_handle_id', name=op.f('uq_extended_accelerator_requests_attach_handle_id'))
    )
    with op.batch_alter_table('extended_accelerator_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_extended_accelerator_requests_instance_uuid'),
                              ['instance_uuid'], unique=False)
        batch_op.create_index(batch_op.f('ix_extended_accelerator_requests_nova_event_pending'),
                              ['nova_event_pending'], unique=False)
        batch_op.create_index(batch_op.f('ix_extended_accelerator_requests_project_id'),
                              ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_extended_accelerator_requests_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_extended_accelerator_requests_uuid'), ['uuid'], unique=True)



def downgrade() -> None:
    with op.batch_alter_table('extended_accelerator_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_extended_accelerator_requests_uuid'))
        batch_op.drop_index(batch_op.f('ix_extended_accelerator_requests_state'))
        batch_op.drop_index(batch_op.f('ix_extended_accelerator_requests_project_id'))
        batch_op.drop_index(batch_op.f('ix_extended_accelerator_requests_nova_event_pending'))
        batch_op.drop_index(batch_op.f('ix_extended_accelerator_requests_instance_uuid'))

    op.drop_table('extended_accelerator_requests')
    with op.batch_alter_table('program_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_program_requests_deployable_id'))

    op.drop_table('program_requests')
    with op.batch_alter_table('attributes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attributes_uuid'))
        batch_op.drop_index(batch_op.f('ix_attributes_deployable_id'))

    op.drop_table('attributes')
    with op.batch_alter_table('attach_handles', schema=None) as batch_op:
        batch_op.drop_index('ix_attach_handles_free')

    op.drop_table('attach_handles')
    with op.batch_alter_table('deployables', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployables_uuid'))
        batch_op.drop_index(batch_op.f('ix_deployables_rp_uuid'))
        batch_op.drop_index(batch_op.f('ix_deployables_placement_dirty'))
        batch_op.drop_index(batch_op.f('ix_deployables_device_id'))

    op.drop_table('deployables')
    with op.batch_alter_table('controlpath_ids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_controlpath_ids_device_id'))

    op.drop_table('controlpath_ids')
    op.drop_table('placement_tombstones')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_hostname'))

    op.drop_table('hosts')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_devices_uuid'))
        batch_op.drop_index(batch_op.f('ix_devices_hostname'))

    op.drop_table('devices')
    with op.batch_alter_table('device_profiles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_profiles_uuid'))
        batch_op.drop_index(batch_op.f('ix_device_profiles_name'))

    op.drop_table('device_profiles')
